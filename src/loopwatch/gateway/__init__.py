"""What a gateway embeds: :class:`~loopwatch.Diagnostics` (``diagnostics``),
which runs the loop monitor, the session checks, the liveness line
(``liveness``) and the status server together.

Sits on top of the capabilities (``loop``, ``sessions``, ``status``); only
the CLI sits above it.
"""
