"""The README's histogram example runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import os
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(heading):
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_histogram_example(impl, monkeypatch):
    import loopwatch

    monkeypatch.setattr(loopwatch, "Histogram", impl.Histogram)
    code = _section_code("## Histograms")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    # each commented print() promises its output: the comment, up to a
    # ": explanation" when there is one
    promised = [
        comment if comment.startswith("{") else comment.split(": ", 1)[0]
        for comment in re.findall(r"^print\(.*\)\s*#\s*(.*?)\s*$", code, re.M)
    ]
    assert len(promised) == 3
    assert printed == promised


def test_other_examples_run(capsys):
    # The sessions example defines a server without starting it; the loop
    # monitor example runs its (empty) service once; the wheel example is
    # self-contained. Each must at least run as printed.
    for heading in ("## Sessions", "### Timer wheel", "### In your code"):
        namespace: dict = {}
        exec(compile(_section_code(heading), f"README.md ({heading})", "exec"), namespace)
    assert namespace["asyncio"] is not None
    out = capsys.readouterr().out.splitlines()
    # the monitor example prints p99 lag (ms), utilization and stall count
    # of an idle loop, as its comment says. A machine loaded enough to keep
    # the loop off a core for 0.1 s makes a real stall: alert() prints it
    # while it goes on, and the count says it.
    *alerts, last = out
    printed = last.split()
    assert len(printed) == 3, out
    utilization, stalls = float(printed[1]), int(printed[2])
    assert stalls == len(alerts) and all(a.startswith("blocked in ") for a in alerts), out
    assert 0 <= utilization < 0.5  # mostly waiting in select: not busy


def test_gateway_example(impl, monkeypatch, runtime_dir, capsys):
    import loopwatch

    monkeypatch.setattr(loopwatch, "LoopMonitor", impl.LoopMonitor)
    monkeypatch.setattr("loopwatch.gateway.diagnostics.LoopMonitor", impl.LoopMonitor)
    code = _section_code("## In a gateway")
    exec(compile(code, "README.md (gateway)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    promised = re.findall(r"^\s*print\(.*\)\s*#\s*(.*?)\s*$", code, re.M)
    assert printed == promised == ["True", "True 1"]
    assert not os.listdir(runtime_dir / "loopwatch")  # the socket is gone


def test_interval_log_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _section_code("### Interval logs (.hlog)")
    exec(compile(code, "README.md (interval logs)", "exec"), {})
    promised = re.findall(r"^\s*print\(.*\)\s*#\s*(.*?)\s*$", code, re.M)
    assert capsys.readouterr().out.splitlines() == promised


def _block_after(marker: str, fence: str = "```") -> str:
    text = README.read_text()
    start = text.index(fence + "\n", text.index(marker)) + len(fence) + 1
    return text[start:text.index("```", start)]


def test_sessions_example_tells_the_story_it_shows(impl, monkeypatch):
    """The README's handler, driven as the story says on a fake clock: the
    log lines are the ones printed under the example."""
    import asyncio
    import functools
    import logging

    import loopwatch

    now = [1000.0]
    wheel = {"wheel_factory": impl.TimerWheel} if impl.name == "python" else {}
    monkeypatch.setattr(loopwatch, "SessionRegistry", functools.partial(
        impl.SessionRegistry, clock=lambda: now[0], **wheel))
    namespace: dict = {}
    exec(compile(_section_code("## Sessions"), "README.md (sessions)", "exec"), namespace)
    registry, store = namespace["registry"], namespace["sessions_on_disk"]
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("loopwatch.sessions")
    handler = Keep()
    log.addHandler(handler)

    class Writer:
        def write(self, data): pass
        async def drain(self): pass
        def close(self): pass

    loop = asyncio.new_event_loop()
    try:
        reader = asyncio.StreamReader(loop=loop)
        sid = "41befe2c-..."
        reader.feed_data(f"{sid}\n".encode())  # then nothing: the client went silent
        task = loop.create_task(namespace["handle"](reader, Writer()))
        loop.run_until_complete(asyncio.sleep(0))
        assert registry.get(sid).state == "processing" and sid in store

        def at(t):
            now[0] = 1000.0 + t
            registry.check()

        at(120.0)
        at(360.0)
        del store[sid]  # the cleanup job, some 12 minutes in
        at(720.0)       # no report due: nothing happens
        at(840.0)
        loop.run_until_complete(asyncio.wait([task], timeout=5))
        assert task.cancelled() and sid not in registry  # on_evict cancelled the handler
    finally:
        log.removeHandler(handler)
        loop.close()
    shown = _block_after("A session whose client went silent").strip().splitlines()
    assert lines == shown


def test_prometheus_example(impl, monkeypatch):
    """Run as printed, on a free port and a registry of its own; scraped
    over HTTP while it is up."""
    import urllib.request

    import prometheus_client
    from prometheus_client.parser import text_string_to_metric_families

    import loopwatch
    from loopwatch.export import prometheus as lw_prometheus

    own = prometheus_client.CollectorRegistry()
    servers = []
    real_start = prometheus_client.start_http_server

    def start_http_server(port, addr="0.0.0.0", registry=own, **kw):
        assert (port, addr) == (9464, "127.0.0.1")  # what the README asks for
        started = real_start(0, addr=addr, registry=registry)
        servers.append(started)
        return started

    monkeypatch.setattr(prometheus_client, "REGISTRY", own)
    monkeypatch.setattr(prometheus_client, "start_http_server", start_http_server)
    monkeypatch.setattr(loopwatch, "LoopMonitor", impl.LoopMonitor)
    monkeypatch.setattr(loopwatch, "watch", impl.watch)
    scraped = []
    real_sleep = None

    async def sleep_and_scrape(seconds):
        await real_sleep(seconds)
        server, _ = servers[0]
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        loop = __import__("asyncio").get_running_loop()
        body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(url, timeout=10).read())
        scraped.append(body.decode())

    import asyncio
    real_sleep = asyncio.sleep
    namespace: dict = {}
    code = _section_code("### Prometheus")
    monkeypatch.setattr(asyncio, "sleep", sleep_and_scrape)
    try:
        exec(compile(code, "README.md (prometheus)", "exec"), namespace)
    finally:
        monkeypatch.setattr(asyncio, "sleep", real_sleep)
        for server, thread in servers:
            server.shutdown()
        sources = lw_prometheus.default_sources()
        if "registry" in namespace:
            sources.remove_registry(namespace["registry"])
        for source in list(sources.monitors()):
            sources.remove_monitor(source.monitor)
    (text,) = scraped
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert "loopwatch_eventloop_lag_seconds_bucket" in names
    assert any(f'registry="gateway"' in line for line in text.splitlines()
               if line.startswith("loopwatch_sessions"))


def test_opentelemetry_example(impl, monkeypatch, capsys):
    monkeypatch.setattr("loopwatch.gateway.diagnostics.LoopMonitor", impl.LoopMonitor)
    exec(compile(_section_code("### OpenTelemetry"), "README.md (otel)", "exec"), {})
    assert capsys.readouterr().out == "True\n"


def test_loopwatch_run_sample_matches_a_default_run(runtime_dir):
    """The sample under "## Loop monitor" is what `loopwatch run
    examples/blocking_app.py` prints by default: the same blocking
    functions in the same order, the same number of stalls, about the same
    watched time. (A loaded machine may add stalls of its own: they come
    on top, and are counted.)"""
    import subprocess
    import sys

    sample = _block_after("at exit each loop gets a summary:")
    def blamed(text):
        return re.findall(r"stall #\d+ in progress: .*?, in (\w+)\(\) at", text)
    shown_stalls = int(re.search(r"(\d+) stalls \(longest", sample).group(1))
    shown_watched = float(re.search(r"watched ([\d.]+) s", sample).group(1))
    assert shown_stalls == len(blamed(sample))
    run = subprocess.run([sys.executable, "-m", "loopwatch", "run", "examples/blocking_app.py"],
                         capture_output=True, text=True, timeout=120, cwd=README.parent)
    assert run.returncode == 0, run.stderr
    real = blamed(run.stderr)
    # the sample's blocking functions, in order, within the real run's
    it = iter(real)
    assert all(name in it for name in blamed(sample)), (blamed(sample), real)
    real_stalls = int(re.search(r"(\d+) stalls? \(longest", run.stderr).group(1))
    assert real_stalls >= shown_stalls
    real_watched = float(re.search(r"watched ([\d.]+) s", run.stderr).group(1))
    assert abs(real_watched - shown_watched) < 0.5
    assert "served" in run.stdout or "served" in run.stderr
