"""RateLog: the first event at once, then one summary per interval while events go on."""

from __future__ import annotations

import logging

import pytest

from exporter.ratelog import RateLog
from tests.support import wait_for

LOGGER = logging.getLogger("test.ratelog")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER.name]


async def test_first_event_in_full_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    rate = RateLog(LOGGER, "failed logins", interval=0.05)
    rate.note("login failed for %s from %s", "alice", "192.0.2.1", peer="192.0.2.1")
    for peer in ("192.0.2.1", "192.0.2.2", "192.0.2.2", "192.0.2.3"):
        rate.note("login failed from %s", peer, peer=peer)
    assert messages(caplog) == [
        "login failed for alice from 192.0.2.1 (more are summarised every 0.05 s)"
    ]
    await wait_for(lambda: len(messages(caplog)) == 2)
    assert messages(caplog)[1] == "4 failed logins from 3 peers in the last 0.05 s"
    rate.close()


async def test_events_while_busy_are_summarised_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    rate = RateLog(LOGGER, "errors", interval=0.05)
    rate.note("error")
    rate.note("error")
    await wait_for(lambda: len(messages(caplog)) == 2)  # "1 errors ..." keeps the window open
    rate.note("error")
    rate.note("error")
    await wait_for(lambda: len(messages(caplog)) == 3)
    assert messages(caplog)[1:] == ["1 errors in the last 0.05 s", "2 errors in the last 0.05 s"]
    rate.close()


async def test_after_a_quiet_interval_the_next_event_is_logged_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    rate = RateLog(LOGGER, "errors", interval=0.05)
    rate.note("error %d", 1)
    await wait_for(lambda: rate._timer is None)  # the quiet interval ended
    rate.note("error %d", 2)
    assert messages(caplog) == [
        "error 1 (more are summarised every 0.05 s)",
        "error 2 (more are summarised every 0.05 s)",
    ]
    rate.close()


async def test_close_flushes_the_count_and_default_wording(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    rate = RateLog(LOGGER, "failed basic-auth attempts", level=logging.ERROR)
    for _ in range(3):
        rate.note("failed", peer="192.0.2.9")
    rate.close()
    assert messages(caplog) == [
        "failed (more are summarised every minute)",
        "2 failed basic-auth attempts from 1 peer in the last minute",
    ]
    assert {r.levelno for r in caplog.records if r.name == LOGGER.name} == {logging.ERROR}
    rate.close()  # nothing left: no further line
    assert len(messages(caplog)) == 2
