"""record()'s entry point (issue 13): the native record() takes calls whose
arguments are small ints straight to C and hands every other call to the
general path. Whichever way a call goes, its result, its exception and what
it leaves recorded are the twin's; its signature is the twin's too."""

from __future__ import annotations

import enum
import inspect
import pydoc
import re

import pytest

from loopwatch._selector import load_implementation

INT64_MAX = (1 << 63) - 1

# Values on both sides of every boundary the entry looks at: one digit of a
# CPython int (2**30), the histogram's top (1023 at (1, 1000, 2)), int64.
VALUES = [0, 1, 1023, 1024, 2**30 - 1, 2**30, 2**31, 2**62, INT64_MAX, 2**63, 10**30,
          -1, -(2**30), -(2**64)]
COUNTS = [0, 1, 3, 2**30 - 1, 2**30, -1]


class Level(enum.IntEnum):
    HIGH = 7


class Ticks:
    def __index__(self) -> int:
        return 9

    def __repr__(self) -> str:  # a stable test id (pytest-xdist compares them)
        return "Ticks()"


NOT_PLAIN_INTS = [True, False, Level.HIGH, Ticks(), 3.0, None, "5", b"5"]


def _run(cls, calls):
    """Each call's outcome (None or the exception's type and text) and the
    histogram's whole state afterwards."""
    h = cls(1, 1000, 2)
    outcomes = []
    for args, kwargs in calls:
        try:
            outcomes.append(h.record(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - the exception is the result
            outcomes.append((type(exc).__name__, str(exc)))
    return (outcomes, h.total_count, h.saturated_count, h.min, h.max, list(h.recorded()),
            h.encode())


def _agrees_with_twin(impl, calls):
    twin = load_implementation("python").Histogram
    assert _run(impl.Histogram, calls) == _run(twin, calls)


@pytest.mark.parametrize("value", VALUES + NOT_PLAIN_INTS, ids=repr)
def test_one_value_as_the_twin(impl, value):
    _agrees_with_twin(impl, [((value,), {})])


@pytest.mark.parametrize("count", COUNTS + NOT_PLAIN_INTS, ids=repr)
@pytest.mark.parametrize("value", [0, 5, 1024, 2**30, -1, 2.5], ids=repr)
def test_value_and_count_as_the_twin(impl, value, count):
    _agrees_with_twin(impl, [((value, count), {}), ((value,), {"count": count}),
                             ((), {"value": value, "count": count}),
                             ((), {"count": count, "value": value})])


def test_many_small_values_as_the_twin(impl):
    calls = [((v,), {}) for v in range(0, 3000, 7)]
    calls += [((v, c), {}) for v, c in zip(range(0, 3000, 11), range(5))]
    calls += [((v,), {"count": c}) for v, c in zip(range(1, 3000, 13), range(4))]
    _agrees_with_twin(impl, calls)


def test_total_at_the_int64_edge_as_the_twin(impl):
    # The entry checks the total itself: at INT64_MAX one more value is an
    # OverflowError that changes nothing, a count of 0 is still fine.
    _agrees_with_twin(impl, [((5, INT64_MAX - 2), {}), ((3,), {}), ((3,), {}), ((3,), {}),
                             ((3, 0), {}), ((3,), {"count": 1}), ((3, 1), {}), ((3, 2**40), {})])


@pytest.mark.parametrize("args, kwargs", [
    ((), {}), ((1, 2, 3), {}), ((1,), {"value": 2}), ((1, 2), {"count": 3}),
    ((1,), {"counts": 2}), ((), {"count": 2}),
])
def test_bad_call_shapes_raise_type_error_and_record_nothing(impl, args, kwargs):
    # The messages are Python's and Cython's own wording: only the type is shared.
    h = impl.Histogram()
    with pytest.raises(TypeError):
        h.record(*args, **kwargs)
    assert h.total_count == 0


def test_keywords_not_interned_take_the_general_path(impl):
    # A keyword name built at run time is another str object than the
    # compiler's "count": the call must still work.
    h = impl.Histogram()
    name = "".join(["co", "unt"])
    h.record(5, **{name: 4})
    assert h.total_count == 4 and h.count_at(5) == 4


def test_subclasses_record_and_may_override(impl):
    class Plain(impl.Histogram):
        pass

    class Doubling(impl.Histogram):
        def record(self, value, count=1):
            super().record(value, 2 * count)

    p, d = Plain(), Doubling()
    p.record(10)
    d.record(10)
    d.record(10, count=2)
    assert p.total_count == 1 and d.total_count == 6


def test_record_signature_is_the_twins(impl):
    twin = load_implementation("python").Histogram
    ours = inspect.signature(impl.Histogram().record)
    theirs = inspect.signature(twin().record)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in theirs.parameters.values()]
    text = pydoc.render_doc(impl.Histogram.record, renderer=pydoc.plaintext)
    # help()'s heading: the native one marks self positional-only, as
    # CPython's own methods do.
    assert re.search(r"record\(self,( /,)? value\b[^)]*\bcount\b[^)]*= ?1\)", text), text
    assert "Record ``count`` occurrences of ``value``." in inspect.getdoc(impl.Histogram.record)


def test_native_record_has_its_own_entry(request):
    # Without it record() still works (through Cython's wrapper) but costs
    # three times as much: a Cython upgrade that changes how it builds
    # record() must be noticed here, not in a benchmark nobody reads.
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    native = load_implementation("native").Histogram
    assert type(vars(native)["record"]).__name__ == "method_descriptor"
    assert inspect.signature(vars(native)["record"]).parameters["value"].kind is (
        inspect.Parameter.POSITIONAL_OR_KEYWORD)
