"""What watching the loop costs a busy asyncio program.

Two workloads, each on asyncio and on uvloop:

* ``call_soon``: a chain of 10**6 callbacks, each scheduling the next with
  ``loop.call_soon`` (one loop iteration per callback: the worst case for
  anything that adds work per iteration);
* ``echo``: a loopback TCP echo server at saturation, 16 clients each
  sending 100-byte messages back to back (the loop never idles).

Each runs unmonitored (the baseline), under loopwatch's monitor at 10 ms and
1 ms (native, and the pure-Python twin), and under the peers that install
here: asyncio debug mode, aiodebug's slow-callback logging, loopmon's
SleepEventLoopMonitor. Ratios against the baseline of the same run:

    python -m pytest benchmarks/loop/bench_loop.py --benchmark-json=/tmp/loop.json
    python benchmarks/loop/loop_ratios.py /tmp/loop.json
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time

import pytest

from loopwatch._selector import load_implementation

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

CHAIN = int(os.environ.get("LOOPWATCH_BENCH_CHAIN", 1_000_000))
ECHO_CLIENTS = 16
ECHO_ROUND_TRIPS = int(os.environ.get("LOOPWATCH_BENCH_ECHO", 40_000))  # in all
MESSAGE = b"x" * 100
ROUNDS = int(os.environ.get("LOOPWATCH_BENCH_ROUNDS", 5))


def new_loop(kind):
    if kind == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop is not installed")
        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


# -- workloads -------------------------------------------------------------------
async def call_soon_chain(n=CHAIN):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [n]

    def step():
        left[0] -= 1
        if left[0]:
            loop.call_soon(step)
        else:
            done.set_result(None)

    loop.call_soon(step)
    await done


class _EchoServer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class _EchoClient(asyncio.Protocol):
    def __init__(self, trips, done):
        self.trips = trips
        self.done = done
        self.pending = len(MESSAGE)

    def connection_made(self, transport):
        self.transport = transport
        transport.write(MESSAGE)

    def data_received(self, data):
        self.pending -= len(data)
        while self.pending <= 0:
            self.trips -= 1
            if self.trips == 0:
                self.done.set_result(None)
                self.transport.close()
                return
            self.pending += len(MESSAGE)
            self.transport.write(MESSAGE)


async def echo_at_saturation(trips=ECHO_ROUND_TRIPS, clients=ECHO_CLIENTS):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoServer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dones = []
    for _ in range(clients):
        done = loop.create_future()
        await loop.create_connection(lambda d=done: _EchoClient(trips // clients, d),
                                     "127.0.0.1", port)
        dones.append(done)
    await asyncio.gather(*dones)
    server.close()
    await server.wait_closed()


WORKLOADS = {"call_soon": call_soon_chain, "echo": echo_at_saturation}


# -- watchers ----------------------------------------------------------------------
@contextlib.contextmanager
def unmonitored(loop):
    yield


def loopwatch_at(impl_name, resolution):
    impl = load_implementation(impl_name)

    @contextlib.contextmanager
    def watcher(loop):
        with impl.LoopMonitor(loop, resolution=resolution, stall_threshold=max(0.1, resolution)):
            yield

    return watcher


@contextlib.contextmanager
def asyncio_debug(loop):
    loop.set_debug(True)
    try:
        yield
    finally:
        loop.set_debug(False)


@contextlib.contextmanager
def aiodebug_slow_callbacks(loop):
    aiodebug = pytest.importorskip("aiodebug.log_slow_callbacks")
    original = asyncio.events.Handle._run
    aiodebug.enable(0.1, on_slow_callback=lambda name, duration: None)
    try:
        yield
    finally:
        asyncio.events.Handle._run = original


@contextlib.contextmanager
def loopmon_monitor(loop):
    loopmon = pytest.importorskip("loopmon")
    monitor = loopmon.SleepEventLoopMonitor(interval=0.01)
    monitor.install_to_loop(loop)
    try:
        yield
    finally:
        loop.run_until_complete(monitor.stop())


WATCHERS = {
    "baseline": unmonitored,
    "loopwatch-native-10ms": loopwatch_at("native", 0.01),
    "loopwatch-native-1ms": loopwatch_at("native", 0.001),
    "loopwatch-python-10ms": loopwatch_at("python", 0.01),
    "loopwatch-python-1ms": loopwatch_at("python", 0.001),
    "asyncio-debug": asyncio_debug,
    "aiodebug-slow-callbacks": aiodebug_slow_callbacks,
    "loopmon-10ms": loopmon_monitor,
}


@pytest.mark.parametrize("watcher", list(WATCHERS))
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_loop_overhead(benchmark, workload, loop_kind, watcher):
    """The workload under `watcher`. On a shared machine, time drifts more
    than the overhead being measured, so each timed round is paired with an
    unwatched run of the same workload just before it (in `setup`), and the
    median of the per-pair ratios goes into extra_info["overhead_ratio"]."""
    if loop_kind == "uvloop" and watcher == "aiodebug-slow-callbacks":
        pytest.skip("aiodebug patches asyncio's Handle, which uvloop does not use")
    benchmark.group = f"loop {workload} on {loop_kind}"
    benchmark.extra_info.update(workload=workload, loop=loop_kind, watcher=watcher)
    loop = new_loop(loop_kind)
    work = WORKLOADS[workload]
    if watcher == "asyncio-debug" and workload == "call_soon":
        # debug mode is 15-40x slower: a tenth of the chain, paired the same way
        def work(n=CHAIN // 10):
            return call_soon_chain(n)

        benchmark.extra_info["chain"] = CHAIN // 10
    unwatched = []
    active = []

    def setup():
        start = time.perf_counter()
        loop.run_until_complete(work())
        unwatched.append(time.perf_counter() - start)
        cm = WATCHERS[watcher](loop)
        cm.__enter__()
        active.append(cm)
        loop.run_until_complete(work(1000))  # the watcher's own start-up, untimed

    def teardown():
        active.pop().__exit__(None, None, None)

    try:
        loop.run_until_complete(work(1000))  # warm up
        benchmark.pedantic(lambda: loop.run_until_complete(work()), setup=setup,
                           teardown=teardown, rounds=ROUNDS, warmup_rounds=1)
    finally:
        while active:
            teardown()
        loop.close()
    watched = benchmark.stats.stats.data
    ratios = sorted(w / u for w, u in zip(watched, unwatched[-len(watched):]))
    benchmark.extra_info["overhead_ratio"] = round(statistics.median(ratios), 4)
    benchmark.extra_info["overhead_ratios"] = [round(r, 4) for r in ratios]
