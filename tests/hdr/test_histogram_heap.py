"""Histograms leave the application's heap as they found it (issue 13).

glibc serves a malloc at or above its mmap threshold (128 KiB by default)
with a mapping of its own, and freeing such a chunk raises the threshold to
the chunk's size: afterwards the application's allocations below that size
come from the brk heap. A default histogram is 184 KiB; the native one maps
its memory itself (ext/hdr/lw_hdr_alloc.h), so creating and freeing any
number of them must leave a 160 KiB malloc served by mmap, as in a process
that never made one. The same experiment with malloc/free of a histogram's
size (what the extension did before) moves it to the heap: the probe tells
the two apart.

Each experiment runs in a fresh process (the threshold only ever goes up),
and glibc counts the mappings it made (mallinfo2().hblks): one more after
the probe's malloc means the probe was mapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import platform
import subprocess
import sys

import pytest

PROBE = 160 * 1024  # above glibc's default threshold, below a histogram's size
HISTOGRAM_BYTES = 96 + 23_552 * 8  # lw_hdr at (1, 3_600_000_000, 3): header + counts

CHILD = r"""
import ctypes, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.calloc.restype = ctypes.c_void_p
libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

# The same imports in every experiment, and only loopwatch.hdr: compiling a
# large module (the package's __init__ imports them all, and tests run with
# PYTHONDONTWRITEBYTECODE) frees chunks big enough to raise the threshold.
import copy, importlib.util, pickle, types
package = types.ModuleType("loopwatch")
package.__path__ = list(importlib.util.find_spec("loopwatch").submodule_search_locations)
sys.modules["loopwatch"] = package
from loopwatch.hdr.native import Histogram

what, probe, size, wire, pickled = sys.argv[1:]
probe, size = int(probe), int(size)
if what == "histograms":
    # Every way the extension allocates one: new, copy, decode, unpickling.
    # (Encoding and pickling are left out: zlib.compress frees chunks of
    # its own that raise the threshold, histograms or not.)
    for _ in range(20):
        h = Histogram(1, 3_600_000_000, 3)
        for v in (1, 1234, 3_600_000_000):
            h.record(v)
        dup = copy.deepcopy(h)
        back = Histogram.decode(wire)
        again = pickle.loads(bytes.fromhex(pickled))
        assert dup == back == again == h
        del h, dup, back, again
elif what == "malloc":
    for _ in range(20):
        libc.free(libc.calloc(1, size))
before = libc.mallinfo2().hblks
p = libc.malloc(probe)
mapped = libc.mallinfo2().hblks == before + 1
print("mapped" if mapped else "heap")
"""


def _glibc_with_mallinfo2() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    return hasattr(ctypes.CDLL(None), "mallinfo2")  # glibc >= 2.33


pytestmark = [
    pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's malloc (mallinfo2) only"),
    # The sanitizer stage preloads ASan, whose malloc is not glibc's.
    pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""), reason="malloc is ASan's"),
]


def _probe(what: str) -> str:
    from loopwatch.hdr.native import Histogram

    h = Histogram(1, 3_600_000_000, 3)
    for v in (1, 1234, 3_600_000_000):
        h.record(v)
    # glibc's malloc tunables would change the thresholds under test.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    run = subprocess.run([sys.executable, "-c", CHILD, what, str(PROBE), str(HISTOGRAM_BYTES),
                          h.encode().decode(), pickle.dumps(h).hex()],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.fixture(scope="module")
def untouched(request):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    # A process that made no histogram: the probe is mapped (else this
    # glibc or environment does not behave as the test assumes).
    assert _probe("nothing") == "mapped"


def test_creating_and_freeing_histograms_keeps_the_mmap_threshold(untouched):
    assert _probe("histograms") == "mapped"


def test_the_probe_sees_a_raised_threshold(untouched):
    # What the extension did before: a histogram's size from calloc, freed.
    # If this came out "mapped", the test above could not fail.
    assert _probe("malloc") == "heap"
