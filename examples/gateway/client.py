#!/usr/bin/env python3
"""The demo gateway's client: one process, one connection, one session.

    python examples/gateway/client.py --port PORT work --seconds 2
    python examples/gateway/client.py --port PORT open --hold 10
    python examples/gateway/client.py --port PORT hang        # a request that never finishes
    python examples/gateway/client.py --port PORT block --seconds 3
    python examples/gateway/client.py --port PORT stats

Each reply is one JSON line on stdout. The code is loopwatch.cli.demo_client
(standard library only); this file runs it.
"""

import sys

from loopwatch.cli.demo_client import main

if __name__ == "__main__":
    sys.exit(main())
