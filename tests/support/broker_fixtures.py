"""pytest plugin: session-scoped ``nats_broker`` and ``redis_broker`` fixtures.

Loaded from ``tests/conftest.py`` with::

    pytest_plugins = ["support.broker_fixtures"]

Each fixture yields a :class:`support.brokers.Broker` (``.url``,
``.kind``, ``.stop()``, ``.start()``, ``.outage()``, ``.flush()``). How the
broker is obtained is decided in :mod:`support.brokers`; the end of the
run reports which broker each test session used and what was passed over.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .brokers import (
    IMAGE_VARS,
    MODE_VAR,
    RESTART_MARKER,
    URL_VARS,
    Broker,
    BrokerName,
    Provisioned,
    image_for,
    provision,
)

__all__ = ["nats_broker", "redis_broker"]

_provisioned: list[Provisioned] = []


def _broker(name: BrokerName, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    result = provision(name, tmp_path_factory.mktemp(f"{name}-broker"))
    _provisioned.append(result)
    try:
        yield result.broker
    finally:
        result.broker.close()


@pytest.fixture(scope="session")
def nats_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A NATS server for the whole session (``nats://host:port``)."""
    yield from _broker("nats", tmp_path_factory)


@pytest.fixture(scope="session")
def redis_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Redis server for the whole session (``redis://host:port/0``)."""
    yield from _broker("redis", tmp_path_factory)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{RESTART_MARKER}: stops and starts a broker; needs a broker the tests own "
        "(container or binary, not RTFORGE_TEST_*_URL)",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = os.environ.get(MODE_VAR) or "auto"
    parts = [f"{MODE_VAR}={mode}"]
    names: tuple[BrokerName, ...] = ("nats", "redis")
    for key in names:
        if os.environ.get(URL_VARS[key]):
            parts.append(f"{URL_VARS[key]}={os.environ[URL_VARS[key]]}")
        elif os.environ.get(IMAGE_VARS[key]) or mode in ("auto", "container"):
            parts.append(f"{key} image {image_for(key)}")
    return ["rtforge test brokers: " + ", ".join(parts)]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _provisioned:
        return
    terminalreporter.section("rtforge test brokers")
    for result in _provisioned:
        terminalreporter.write_line(result.summary())
