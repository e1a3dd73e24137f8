#!/usr/bin/env python3
"""A real asyncio gateway that embeds loopwatch.Diagnostics: sessions in a
loopwatch.SessionRegistry, one store file per session, JSON lines over TCP.

    python examples/gateway/server.py --port 0 --store /tmp/gw-store \
        --stuck-after 2 --evict-after 30 --liveness-interval 2 --check-interval 0.5

It prints `listening host=... port=... pid=...` on stdout, then logs JSON
lines on stderr. Try `python examples/gateway/client.py --port PORT work`
and `loopwatch status PID` next to it, or let `loopwatch demo` drive it.
The code is loopwatch.cli.demo_gateway (shipped in the package, so that
`loopwatch demo` works from an installed wheel); this file runs it.
"""

import sys

from loopwatch.cli.demo_gateway import main

if __name__ == "__main__":
    sys.exit(main())
