"""Every test that takes the ``impl`` fixture runs against both
implementations: the native extension and its pure-Python twin."""

from __future__ import annotations

import pytest

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
