"""Build of loopwatch's native extension.

Switches (environment variables, read at build time):

    LOOPWATCH_NO_EXTENSIONS=1  build no extension: a pure-Python install
    LOOPWATCH_DEBUG_BUILD=1    -O0 -g with C asserts on
    LOOPWATCH_SANITIZE=1       AddressSanitizer + UndefinedBehaviorSanitizer
                               (implies the debug flags; load with
                               LD_PRELOAD=$(cc -print-file-name=libasan.so))
"""

import glob
import os

from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("LOOPWATCH_NO_EXTENSIONS")
DEBUG = _flag("LOOPWATCH_DEBUG_BUILD")
SANITIZE = _flag("LOOPWATCH_SANITIZE")

# Exact float semantics: the mean and stdev must match other HdrHistogram
# implementations bit for bit, so no fused multiply-add contraction.
compile_args = ["-std=c11", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-function"]
link_args = []
undef_macros = []
if DEBUG or SANITIZE:
    compile_args += ["-O0", "-g3", "-fno-omit-frame-pointer"]
    undef_macros.append("NDEBUG")
else:
    compile_args += ["-O2"]
if SANITIZE:
    sanitizers = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    compile_args += sanitizers
    link_args += sanitizers


def native_extension(name, pyx):
    # Cython's generated code is not C11-pedantic; the portable C in ext/
    # is compiled with the same flags and kept warning-free.
    return Extension(
        name,
        sources=[pyx] + sorted(glob.glob("ext/*.c")),
        include_dirs=["ext"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        undef_macros=undef_macros,
        libraries=["m", "pthread"],
    )


ext_modules = []
if not NO_EXTENSIONS:
    from Cython.Build import cythonize

    # Every src/loopwatch/*.pyx is one extension module, each linked with the
    # whole portable core in ext/ (small; the linker drops what is unused).
    pyx_files = sorted(glob.glob("src/loopwatch/*.pyx"))
    ext_modules = cythonize(
        [
            native_extension("loopwatch." + os.path.basename(pyx)[: -len(".pyx")], pyx)
            for pyx in pyx_files
        ],
        include_path=["src"],
        compiler_directives={"language_level": "3", "embedsignature": True},
        gdb_debug=False,
    )

setup(ext_modules=ext_modules)
