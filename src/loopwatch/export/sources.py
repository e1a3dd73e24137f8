"""The monitors and session registries of a process, for the exporters.

One process-wide :class:`Sources` (:func:`default_sources`) that
``Diagnostics`` and ``loopwatch run`` add their monitors and registries to,
and that the exporters (Prometheus, OpenTelemetry, interval logs) read. An
application may add its own, or build a private :class:`Sources` for one
exporter.

Each monitor gets a short name, its ``loop`` label: ``loop1``, ``loop2``...
in the order they were added (per process), unless one is given. Each
registry gets a ``registry`` label (``default`` for the first one unless
named, then ``registry2``...). Evictions and stuck reports are counted per
registry from the moment it is added, through the registry's event
listener hook (:meth:`loopwatch.SessionRegistry.add_event_listener`), so
every exporter reading the same sources sees the same counters.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, NamedTuple

__all__ = ["EVICTION_REASONS", "MonitorSource", "RegistrySource", "Sources", "default_sources"]

#: Every eviction reason, so each counter exists (at 0) from the start.
EVICTION_REASONS = ("ghost", "stuck_too_long", "idle")


class MonitorSource(NamedTuple):
    """A loop monitor and its ``loop`` label."""

    name: str
    monitor: Any


class RegistrySource:
    """A session registry, its ``registry`` label and the counters of its
    events since it was added (``evictions`` by reason, ``stuck_reports``,
    ``recoveries``)."""

    def __init__(self, name: str, registry: Any) -> None:
        self.name = name
        self.registry = registry
        self._lock = threading.Lock()
        self._evictions = dict.fromkeys(EVICTION_REASONS, 0)
        self._stuck_reports = 0
        self._recoveries = 0

    def _on_event(self, event: Any) -> None:
        with self._lock:
            if event.kind == "evicted":
                reason = str(event.reason)
                self._evictions[reason] = self._evictions.get(reason, 0) + 1
            elif event.kind == "stuck":
                self._stuck_reports += 1
            elif event.kind == "recovered":
                self._recoveries += 1

    def evictions(self) -> dict[str, int]:
        """Sessions evicted since the registry was added, by reason."""
        with self._lock:
            return dict(self._evictions)

    @property
    def stuck_reports(self) -> int:
        """Stuck reports made since the registry was added."""
        return self._stuck_reports

    @property
    def recoveries(self) -> int:
        """Stuck sessions that recovered since the registry was added."""
        return self._recoveries

    def __repr__(self) -> str:
        return f"<RegistrySource {self.name!r} {self.registry!r}>"


class Sources:
    """A set of loop monitors and session registries to export.

    Thread-safe; adding and removing while an exporter reads is fine (each
    read takes a copy of the lists).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Empty, with fresh numbering (also in a forked child)."""
        self._lock = threading.Lock()
        self._monitors: list[MonitorSource] = []
        self._registries: list[RegistrySource] = []
        self._loop_numbers = itertools.count(1)
        self._registry_numbers = itertools.count(1)

    # -- monitors --------------------------------------------------------------
    def add_monitor(self, monitor: Any, loop: str | None = None) -> str:
        """Export a :class:`loopwatch.LoopMonitor`; returns its ``loop``
        label (``loop`` if given, else ``loop1``, ``loop2``... in order).
        Adding a monitor again returns its existing label."""
        if not callable(getattr(monitor, "snapshot", None)):
            raise TypeError("monitor must be a loopwatch.LoopMonitor")
        if loop is not None and (not isinstance(loop, str) or not loop):
            raise TypeError("loop must be a non-empty str or None")
        with self._lock:
            for source in self._monitors:
                if source.monitor is monitor:
                    return source.name
            number = next(self._loop_numbers)
            name = loop if loop is not None else f"loop{number}"
            self._monitors.append(MonitorSource(name, monitor))
            return name

    def remove_monitor(self, monitor: Any) -> bool:
        """Stop exporting a monitor; False when it was not there."""
        with self._lock:
            for i, source in enumerate(self._monitors):
                if source.monitor is monitor:
                    del self._monitors[i]
                    return True
        return False

    def monitors(self) -> list[MonitorSource]:
        """The monitors, in the order they were added."""
        with self._lock:
            return list(self._monitors)

    # -- registries ------------------------------------------------------------
    def add_registry(self, registry: Any, name: str | None = None) -> str:
        """Export a :class:`loopwatch.SessionRegistry`; returns its
        ``registry`` label (``name`` if given; else ``default`` for the first
        one, ``registry2``... after). From now on its evictions and stuck
        reports are counted (an event listener on the registry)."""
        if not callable(getattr(registry, "counts", None)):
            raise TypeError("registry must be a loopwatch.SessionRegistry")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError("name must be a non-empty str or None")
        with self._lock:
            for source in self._registries:
                if source.registry is registry:
                    return source.name
            number = next(self._registry_numbers)
            if name is None:
                name = "default" if number == 1 else f"registry{number}"
            source = RegistrySource(name, registry)
            self._registries.append(source)
        add_listener = getattr(registry, "add_event_listener", None)
        if add_listener is not None:
            add_listener(source._on_event)
        return name

    def remove_registry(self, registry: Any) -> bool:
        """Stop exporting a registry (and counting its events)."""
        with self._lock:
            for i, source in enumerate(self._registries):
                if source.registry is registry:
                    del self._registries[i]
                    break
            else:
                return False
        remove_listener = getattr(registry, "remove_event_listener", None)
        if remove_listener is not None:
            remove_listener(source._on_event)
        return True

    def registries(self) -> list[RegistrySource]:
        """The registries, in the order they were added."""
        with self._lock:
            return list(self._registries)

    def __repr__(self) -> str:
        return (f"<Sources monitors={[m.name for m in self.monitors()]} "
                f"registries={[r.name for r in self.registries()]}>")


_DEFAULT = Sources()


def default_sources() -> Sources:
    """The process-wide sources: what ``Diagnostics`` and ``loopwatch run``
    add to, and what exporters read unless given others."""
    return _DEFAULT


def _after_fork_in_child() -> None:
    # The parent's monitors are stopped in the child (see the loop monitor)
    # and its registries are the parent's business: the child starts with
    # empty sources and its own numbering (the same object, so exporters
    # holding it see the child's own monitors).
    _DEFAULT._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
