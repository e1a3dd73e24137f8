"""Build of loopwatch's native extensions.

Switches (environment variables, read at build time):

    LOOPWATCH_NO_EXTENSIONS=1  build no extension: a pure-Python install
    LOOPWATCH_DEBUG_BUILD=1    -O0 -g3 with C asserts on
    LOOPWATCH_SANITIZE=1       AddressSanitizer + UndefinedBehaviorSanitizer,
                               any report fatal (implies the debug flags; load
                               with LD_PRELOAD=$(cc -print-file-name=libasan.so))
    LOOPWATCH_BUILD_ONLY=a,b   development: build only these modules (dotted
                               names, e.g. loopwatch.hdr.native)
"""

import glob
import os
import sys

from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


# Extension module (its .pyx under src/) -> the ext/ families (folders) it
# compiles and includes. Each family builds alone: a module names every
# folder it needs, and nothing else is on its include path.
NATIVE_MODULES = {
    "loopwatch.hdr.native": ["hdr"],
    "loopwatch.sessions.wheel_native": ["wheel"],
    "loopwatch.sessions.native": ["sessions", "wheel", "platform"],
    "loopwatch.loop.native": ["hdr", "loop", "platform"],
    "loopwatch.status.native": ["hdr", "loop", "platform", "status"],
}

NO_EXTENSIONS = _flag("LOOPWATCH_NO_EXTENSIONS")
DEBUG = _flag("LOOPWATCH_DEBUG_BUILD")
SANITIZE = _flag("LOOPWATCH_SANITIZE")
BUILD_ONLY = [m for m in os.environ.get("LOOPWATCH_BUILD_ONLY", "").split(",") if m]

# Exact float semantics: the mean and stdev must match other HdrHistogram
# implementations bit for bit, so no fused multiply-add contraction.
compile_args = ["-std=c11", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-function"]
link_args = []
undef_macros = []
if DEBUG or SANITIZE:
    compile_args += ["-O0", "-g3", "-fno-omit-frame-pointer"]
    undef_macros.append("NDEBUG")
else:
    # Release builds ship no debug info: Python's own CFLAGS carry -g, which
    # -g0 (later on the command line) overrides; the linker then drops the
    # static symbol table too (the exported PyInit_ symbol is kept), about
    # 4x smaller extensions. The debug and sanitizer builds keep everything.
    compile_args += ["-O2", "-g0"]
    link_args += ["-Wl,-S"] if sys.platform == "darwin" else ["-s"]
if SANITIZE:
    # float-cast-overflow is not part of "undefined": a double converted to
    # an integer type it does not fit (a tick count, a bucket index) is caught too.
    sanitizers = ["-fsanitize=address,undefined,float-cast-overflow",
                  "-fno-sanitize-recover=undefined,float-cast-overflow"]
    compile_args += sanitizers
    link_args += sanitizers


def native_extension(module, families):
    sources = ["src/" + module.replace(".", "/") + ".pyx"]
    for family in families:
        sources += sorted(glob.glob(f"ext/{family}/*.c"))
    return Extension(
        module,
        sources=sources,
        include_dirs=[f"ext/{family}" for family in families],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        undef_macros=undef_macros,
        libraries=["m", "pthread", "dl"],
    )


ext_modules = []
if not NO_EXTENSIONS:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            native_extension(module, families)
            for module, families in NATIVE_MODULES.items()
            if not BUILD_ONLY or module in BUILD_ONLY
        ],
        include_path=["src"],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )

setup(ext_modules=ext_modules)
