"""Exporters: loopwatch's figures in the metrics systems services already
scrape.

* :mod:`loopwatch.export.prometheus`: a ``prometheus_client`` collector and
  an HTTP endpoint (extra ``loopwatch[prometheus]``);
* :mod:`loopwatch.export.otel`: OpenTelemetry observable instruments
  (extra ``loopwatch[otel]``);
* :mod:`loopwatch.export.hlog`: HdrHistogram interval logs of each loop's
  lag, written from a thread of their own (``loopwatch.HistogramLogWriter``
  underneath; no extra needed);
* :mod:`loopwatch.export.sources`: the monitors and registries of the
  process that the exporters read.

This package imports the capabilities (loop monitor, session registry,
histograms) and optional third-party clients only when their module is
imported; nothing here imports the CLI.
"""

from __future__ import annotations

from typing import Any

from .sources import Sources, default_sources

__all__ = ["Sources", "add_monitor", "add_registry", "default_sources", "remove_monitor",
           "remove_registry"]


def add_monitor(monitor: Any, loop: str | None = None) -> str:
    """Export a loop monitor through every exporter of the process (the
    default sources); returns its ``loop`` label."""
    return default_sources().add_monitor(monitor, loop=loop)


def remove_monitor(monitor: Any) -> bool:
    """Stop exporting a monitor added with :func:`add_monitor`."""
    return default_sources().remove_monitor(monitor)


def add_registry(registry: Any, name: str | None = None) -> str:
    """Export a session registry through every exporter of the process (the
    default sources); returns its ``registry`` label."""
    return default_sources().add_registry(registry, name=name)


def remove_registry(registry: Any) -> bool:
    """Stop exporting a registry added with :func:`add_registry`."""
    return default_sources().remove_registry(registry)
