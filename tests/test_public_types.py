"""What users' tools see: ``inspect.signature`` (and so ``help()``) on every
public callable of either implementation, and the native modules' ``.pyi``
stubs saying what the twins (which type checkers read, through _selector)
say: the same names, parameters, defaults and annotations."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pydoc
import re

import pytest

import loopwatch
from loopwatch._selector import _TWINS, load_implementation

SRC = os.path.dirname(loopwatch.__file__)


def _shape(sig):
    """A signature without annotations: names, kinds and defaults."""
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_every_public_callable_has_a_signature(impl):
    for name in loopwatch.__all__:
        obj = getattr(impl, name, None) or getattr(loopwatch, name)
        if callable(obj):
            inspect.signature(obj)  # raises ValueError/TypeError when there is none


@pytest.mark.parametrize("name", sorted(_TWINS))
def test_native_and_twin_signatures_agree(name, impl):
    ours = inspect.signature(getattr(impl, name))
    twin = inspect.signature(getattr(load_implementation("python"), name))
    assert _shape(ours) == _shape(twin)
    assert _shape(ours), name  # a constructor with arguments, not object's ()


def test_help_shows_the_constructor(impl):
    # help()'s heading of the class: its name and the constructor's arguments
    # (the twin's with annotations; 3.13 may spread them over lines).
    for cls, params in ((impl.Histogram, ["lowest_trackable", "highest_trackable",
                                          "significant_figures"]),
                        (impl.TimerWheel, ["resolution", "now"])):
        text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
        heading = text[:text.index("Methods defined here")]
        assert re.search(rf"\b{cls.__name__}\(", heading), heading
        positions = [heading.find(name) for name in params]
        assert -1 not in positions and positions == sorted(positions), heading


# stub module -> {class or function in the stub: its twin, "module:qualname"}
STUBS = {
    "hdr/native.pyi": {"Histogram": "loopwatch.hdr.twin:Histogram"},
    "sessions/wheel_native.pyi": {
        "TimerWheel": "loopwatch.sessions.wheel_twin:TimerWheel",
        "HashedKey": "loopwatch.sessions.wheel_twin:HashedKey",
    },
    "sessions/native.pyi": {"SessionRegistry": "loopwatch.sessions.twin:SessionRegistry"},
    "loop/native.pyi": {
        "_NativeCore": "loopwatch.loop.twin:_PyCore",
        "_NativeTick": "loopwatch.loop.twin:_PyTick",
        "_NativeSelectTimer": "loopwatch.loop.twin:_PySelectTimer",
        "LoopMonitor": "loopwatch.loop.twin:LoopMonitor",
        "watch": "loopwatch.loop.twin:watch",
    },
}


# What a twin has and its native counterpart does without: the twin's tick
# and ping store the heartbeat and take the idle answers through the core;
# the native ones do it in C.
TWIN_ONLY = {"_NativeCore": {"heartbeat", "ping_answer", "take_idle_answers"}}


def _twin(path):
    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _stub_params(fn: ast.FunctionDef):
    a = fn.args
    out = []
    positional = a.posonlyargs + a.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(a.defaults)) + a.defaults
    for arg, default in zip(positional, defaults):
        kind = (inspect.Parameter.POSITIONAL_ONLY if arg in a.posonlyargs
                else inspect.Parameter.POSITIONAL_OR_KEYWORD)
        out.append((arg.arg, kind, default, arg.annotation))
    if a.vararg:
        out.append((a.vararg.arg, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.empty,
                    a.vararg.annotation))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, inspect.Parameter.KEYWORD_ONLY,
                    inspect.Parameter.empty if default is None else default, arg.annotation))
    if a.kwarg:
        out.append((a.kwarg.arg, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.empty,
                    a.kwarg.annotation))
    return out


def _norm(annotation):
    """An annotation as text, typing's spellings reduced to their names."""
    if annotation is None or annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else ast.unparse(annotation)
    text = text.replace("typing.", "").replace("'", "")
    for native, twin in NATIVE_NAMES.items():
        text = re.sub(rf"\b{native}\b", twin, text)
    return text


# The private classes' names on each side (a native core takes a native core).
NATIVE_NAMES = {"_NativeCore": "_PyCore", "_NativeTick": "_PyTick"}


def _check_function(where, stub_fn, runtime):
    sig = inspect.signature(runtime)
    stub = _stub_params(stub_fn)
    runtime_params = list(sig.parameters.values())
    assert [(n, k) for n, k, _, _ in stub] == [(p.name, p.kind) for p in runtime_params], where
    for (name, _, default, annotation), p in zip(stub, runtime_params):
        if default is inspect.Parameter.empty:
            assert p.default is inspect.Parameter.empty, (where, name)
        else:
            assert ast.literal_eval(default) == p.default, (where, name)
        if name not in ("self", "cls") and annotation is not None:
            assert _norm(annotation) == _norm(p.annotation), (where, name)
    if stub_fn.returns is not None and sig.return_annotation is not inspect.Parameter.empty:
        assert _norm(stub_fn.returns) == _norm(sig.return_annotation), (where, "return")


@pytest.mark.parametrize("stub_path", sorted(STUBS))
def test_stubs_agree_with_the_twins(stub_path):
    with open(os.path.join(SRC, stub_path)) as f:
        tree = ast.parse(f.read())
    checked = 0
    for node in tree.body:
        if node.name if isinstance(node, (ast.ClassDef, ast.FunctionDef)) else None:
            target = STUBS[stub_path].get(node.name)
            if target is None:
                continue
            twin = _twin(target)
            if isinstance(node, ast.FunctionDef):
                _check_function(node.name, node, twin)
                checked += 1
                continue
            members = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
            if node.bases and not members:  # e.g. LoopMonitor(LoopMonitorBase): the same base
                assert [ast.unparse(b) for b in node.bases] == [
                    b.__name__ for b in twin.__bases__], node.name
                checked += 1
                continue
            methods = (property, classmethod, staticmethod)
            twin_defs = {n for n, v in vars(twin).items()
                         if not n.startswith("_") and (callable(v) or isinstance(v, methods))}
            twin_defs -= TWIN_ONLY.get(node.name, set())
            assert {n for n in members if not n.startswith("_")} == twin_defs, node.name
            for name, member in members.items():
                if name.startswith("_") and not hasattr(twin, name):
                    continue  # a native-only helper (e.g. TimerWheel._native_memory)
                runtime = getattr(twin, name)
                if isinstance(runtime, property):
                    assert any(isinstance(d, ast.Name) and d.id == "property"
                               for d in member.decorator_list), (node.name, name)
                    if member.returns is not None:
                        returned = inspect.signature(runtime.fget).return_annotation
                        assert _norm(member.returns) == _norm(returned), (node.name, name)
                    continue
                if isinstance(inspect.getattr_static(twin, name), classmethod):
                    runtime = getattr(twin, name).__func__
                _check_function(f"{node.name}.{name}", member, runtime)
            checked += 1
    assert checked == len(STUBS[stub_path])


@pytest.mark.parametrize("stub_path", sorted(STUBS))
def test_stubs_name_what_the_native_modules_define(stub_path, request):
    """Every public name of a native class is in its stub, and the reverse."""
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    module = importlib.import_module("loopwatch." + stub_path[:-4].replace("/", "."))
    with open(os.path.join(SRC, stub_path)) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        members = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
        members |= {m.target.id for m in node.body
                    if isinstance(m, ast.AnnAssign) and isinstance(m.target, ast.Name)}
        cls = getattr(module, node.name)
        if node.bases and not members - {"__init__"}:
            continue  # a Python subclass: its API is the base's
        # What a base from another module (the shared RegistryBase) gives
        # is that module's to declare.
        shared = {n for base in cls.__mro__[1:] if base.__module__ != cls.__module__
                  for n in vars(base)}
        public = {n for n in dir(cls) if not n.startswith("_") and n not in shared}
        stub_public = {n for n in members if not n.startswith("_")}
        # Attributes set on instances (not in dir(cls)) are stubbed too.
        assert public <= stub_public, (node.name, public - stub_public)
        missing = {n for n in stub_public - public}
        instance = {m.target.id for m in node.body if isinstance(m, ast.AnnAssign)}
        assert missing <= instance, (node.name, missing)


def test_every_public_name_and_method_has_a_docstring(impl):
    """Every name in loopwatch.__all__, and every public method or property
    of the public classes, says what it is (both implementations)."""
    import inspect

    import loopwatch

    names = {"Histogram": impl.Histogram, "TimerWheel": impl.TimerWheel,
             "LoopMonitor": impl.LoopMonitor, "watch": impl.watch,
             "SessionRegistry": impl.SessionRegistry}
    missing = []
    for name in loopwatch.__all__:
        obj = names.get(name, getattr(loopwatch, name))
        if isinstance(obj, (str, int, float, tuple, frozenset)):
            continue  # constants: documented in the module
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            # inherited members too (the native SessionRegistry's are its
            # C table's and the shared base's), but not object's
            for attr in dir(obj):
                member = inspect.getattr_static(obj, attr)
                if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                    continue
                if not inspect.getdoc(getattr(obj, attr, member)) and not inspect.getdoc(member):
                    missing.append(f"{name}.{attr}")
    assert missing == []
