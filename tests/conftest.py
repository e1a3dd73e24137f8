"""The fixtures shared by every test folder.

``impl``: every test that takes it runs against both implementations, the
native extension and its pure-Python twin. ``loop_kind`` / ``loop``: every
test that takes one runs on asyncio's selector loop and on uvloop, as
uvloop's own tests do. Helpers (not fixtures) are in ``loop_support.py``.
"""

from __future__ import annotations

import pytest
from loop_support import LOOP_KINDS, new_loop, uvloop

from loopwatch._selector import load_implementation


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-native",
        action="store_true",
        default=False,
        help="skip the native implementation (test only the pure-Python twin)",
    )


@pytest.fixture(params=["native", "python"])
def impl(request: pytest.FixtureRequest):
    """The implementation under test: ``impl.Histogram``, ``impl.name``, ..."""
    if request.param == "native" and request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    # A native extension that does not import fails here, loudly: the
    # fallback to the twin is for users, not for the test suite.
    return load_implementation(request.param)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    """``"asyncio"`` or ``"uvloop"``."""
    if request.param == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed")
    return request.param


@pytest.fixture
def loop(loop_kind: str):
    """A fresh, not running loop of the kind under test, closed afterwards."""
    lp = new_loop(loop_kind)
    yield lp
    if not lp.is_closed():
        lp.close()


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    """A private XDG_RUNTIME_DIR (status sockets) for this test and the
    processes it starts."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder
