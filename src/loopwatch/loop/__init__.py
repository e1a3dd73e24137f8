"""The loop monitor: the sampler binding (``native``, over ``ext/loop/`` and
``ext/platform/``), its pure-Python twin (``twin``), everything both share
once (``monitor``: options, hooks, reporter thread, snapshots, fork and
exit) and the value types (``stats``).

Internal: the public names are ``loopwatch.LoopMonitor``,
``loopwatch.watch`` and the types of :mod:`loopwatch.loop.stats`. Imports
nothing above it but :mod:`loopwatch.hdr`.
"""
