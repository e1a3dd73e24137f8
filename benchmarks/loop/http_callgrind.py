"""What the loop monitor costs real HTTP servers: instructions of the
server's loop thread per request served, under callgrind, at saturation.

Servers (benchmarks/loop/child_server.py, each run in a fresh process on
127.0.0.1): aiohttp.web on asyncio, and uvicorn (h11) on uvloop with a raw
ASGI app. A bounded load generator in another process
(benchmarks/loop/http_load.py: 8 keep-alive connections, each sending its
next request as soon as its last answer came, REQUESTS in all after a
warm-up) keeps the server busy; the server counts only the requests
between GET /__start and /__stop (lw_bench.CallgrindWindow), in its main
(loop) thread. As for the chain (loop_callgrind.py), a watched server's
resolution and threshold are scaled by valgrind's slowdown, measured in
the same run: the realistic baseline's requests under callgrind against
the same requests served natively.

Baselines of the same run: realistic (one unrelated timer, one idle
thread, loopwatch imported but not started: the import alone moves a
server's count by up to 0.9 %, see lw_bench.realistic), plain (the same
without the import) and single (unwatched, single-threaded). Rounds alternate the
variants; each ratio is the median over rounds.

    python benchmarks/loop/http_callgrind.py [--requests 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import selectors
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lw_bench  # noqa: E402

SERVER = os.path.join(lw_bench.HERE, "child_server.py")
LOAD = os.path.join(lw_bench.HERE, "http_load.py")
SERVERS = ("aiohttp", "uvicorn")
WATCHED = ("watched-10ms", "watched-1ms")
WARMUP = 200
CONNECTIONS = 8


def _read_port(proc: subprocess.Popen, timeout: float) -> int:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        if sel.select(max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if not line or line.startswith("port "):
                break
    sel.close()
    if not line.startswith("port "):
        proc.kill()
        raise RuntimeError(f"the server did not start: {proc.stderr.read()[-2000:]}")
    return int(line.split()[1])


def serve(server: str, variant: str, scale: float, requests: int,
          lib: str | None) -> tuple[float | None, float]:
    """One server process under load: (loop-thread instructions per
    request under callgrind, or None natively; the load's wall time)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        cmd = (lw_bench.callgrind_command(out) if lib else [lw_bench.PY])
        env = lw_bench.child_env({"LW_CALLGRIND_LIB": lib} if lib else None)
        proc = subprocess.Popen(cmd + [SERVER, server, variant, str(scale)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            port = _read_port(proc, 600)
            load = lw_bench.run_child([LOAD, str(port), str(requests), "--warmup", str(WARMUP),
                                       "--connections", str(CONNECTIONS)], timeout=3600)
            _, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"{server} {variant} failed ({proc.returncode}): {err[-2000:]}")
        elapsed = lw_bench.field(load, "elapsed")
        if not lib:
            return None, elapsed
        # the window holds the requests and the tail of /__start and head
        # of /__stop: about one more request
        return lw_bench.read_window(out, err)[1] / (requests + 1), elapsed


def request_costs(server: str, requests: int, rounds: int, lib: str) -> dict[str, object]:
    """Per-request loop-thread instructions per variant (median over
    rounds), the watched ones' ratios to both baselines, the slowdown."""
    real = min(serve(server, "realistic", 1.0, requests, None)[1] for _ in range(2))
    scale = None
    per_req: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for r in range(rounds):
        order = ["realistic", "single", "plain", *WATCHED] if r % 2 == 0 else \
            ["realistic", *reversed(WATCHED), "plain", "single"]
        counts: dict[str, float] = {}
        for variant in order:
            count, elapsed = serve(server, variant, scale or 1.0, requests, lib)
            assert count is not None
            if variant == "realistic" and scale is None:
                scale = elapsed / real
            counts[variant] = count
        for variant, value in counts.items():
            per_req.setdefault(variant, []).append(value)
        for variant in WATCHED:
            ratios.setdefault(f"{variant}/realistic", []).append(
                counts[variant] / counts["realistic"])
            ratios.setdefault(f"{variant}/single", []).append(counts[variant] / counts["single"])
        ratios.setdefault("realistic/single", []).append(counts["realistic"] / counts["single"])
        ratios.setdefault("realistic/plain", []).append(counts["realistic"] / counts["plain"])
    return {"per_request": {v: lw_bench.median(x) for v, x in per_req.items()},
            "ratio": {k: lw_bench.median(x) for k, x in ratios.items()},
            "ratios": ratios, "scale": scale, "requests": requests, "rounds": rounds,
            "native_rps": requests / real}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.requests} requests at saturation (8 connections): server loop-thread "
          f"instructions per request (callgrind), median of {args.rounds} rounds")
    with lw_bench.callgrind_lib() as lib:
        for server in SERVERS:
            r = request_costs(server, args.requests, args.rounds, lib)
            pr, ratio = r["per_request"], r["ratio"]
            print(f"{server}: single {pr['single']:.0f}, plain {pr['plain']:.0f}, realistic "
                  f"{pr['realistic']:.0f} ({ratio['realistic/single']:.4f}x single, "
                  f"{ratio['realistic/plain']:.4f}x plain); {r['native_rps']:.0f} requests/s "
                  f"natively; valgrind slowdown {r['scale']:.0f}x")
            for variant in WATCHED:
                print(f"  {variant:<13} {pr[variant]:.0f}/request: "
                      f"{ratio[variant + '/realistic']:.4f}x realistic, "
                      f"{ratio[variant + '/single']:.4f}x single", flush=True)


if __name__ == "__main__":
    main()
