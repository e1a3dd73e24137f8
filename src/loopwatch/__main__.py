"""``python -m loopwatch ...``: the same as the ``loopwatch`` command (see
:mod:`loopwatch.cli.main`)."""

import sys

from loopwatch.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
