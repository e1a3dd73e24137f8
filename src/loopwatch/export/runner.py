"""The exporters a process-wide watcher runs (what ``loopwatch run
--prometheus-port/--hlog`` starts): a Prometheus endpoint and an interval
log, both over the process's default sources."""

from __future__ import annotations

import sys
from typing import Any

from .sources import default_sources

__all__ = ["Exporters"]


class Exporters:
    """Starts the exporters asked for, adds monitors to the default sources,
    stops everything at the end.

    Args:
        prometheus_port: serve Prometheus metrics on this port (0: a free
            one); None: no endpoint.
        prometheus_host: the address for it (loopback by default).
        hlog: a path for the lag interval log; None: no log.
        hlog_interval: seconds between its lines.
        announce: a text stream on which the endpoint's URL and the log's
            path are written (default: sys.stderr), or None.
    """

    def __init__(self, prometheus_port: int | None = None, prometheus_host: str = "127.0.0.1",
                 hlog: str | None = None, hlog_interval: float = 1.0, *,
                 announce: Any = sys.stderr) -> None:
        self._port = prometheus_port
        self._host = prometheus_host
        self._hlog_path = hlog
        self._hlog_interval = hlog_interval
        self._announce = announce
        self.prometheus: Any = None
        self.hlog: Any = None

    def start(self) -> Exporters:
        """Start them; raises (ImportError, OSError, ValueError) with nothing
        left running when one cannot start."""
        try:
            if self._port is not None:
                from . import prometheus

                try:
                    self.prometheus = prometheus.serve(self._port, self._host)
                except OSError as exc:
                    raise OSError(f"cannot serve Prometheus metrics on {self._host!r} port "
                                  f"{self._port}: {exc}") from exc
                self._say(f"loopwatch: Prometheus metrics on {self.prometheus.url}")
            if self._hlog_path is not None:
                from .hlog import LagLogger

                try:
                    self.hlog = LagLogger(self._hlog_path, self._hlog_interval).start()
                except OSError as exc:
                    raise OSError(f"cannot write the interval log {self._hlog_path!r}: "
                                  f"{exc.strerror or exc}") from exc
                self._say(f"loopwatch: lag interval log in {self._hlog_path} "
                          f"every {self._hlog_interval:g} s")
        except BaseException:
            self.stop()
            raise
        return self

    def _say(self, line: str) -> None:
        if self._announce is not None:
            print(line, file=self._announce, flush=True)

    def add_monitor(self, monitor: Any) -> str:
        """Export a monitor (the default sources); returns its label."""
        return default_sources().add_monitor(monitor)

    def stop(self) -> None:
        """Write the log's last lines and close it; stop the endpoint."""
        hlog, self.hlog = self.hlog, None
        if hlog is not None:
            hlog.stop()
        prom, self.prometheus = self.prometheus, None
        if prom is not None:
            prom.stop()
