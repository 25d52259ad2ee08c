"""Liquidation risk per position: v2/account.position beside v2/account.status, end to end."""

from __future__ import annotations

from typing import Any

from exporter.app import run_exporter
from exporter.poller import AccountPoller
from exporter.simulator import POSITION_METHOD, ErrorAnswer, Mutate, Simulator
from tests.support import HMAC_KEY, HMAC_SECRET, Samples, scrape_when_up, sim_config

ONEWAY = {"name": "oneway", "api_key": HMAC_KEY, "api_secret": HMAC_SECRET}
STATUS = "v2/account.status"


def methods(sim: Simulator) -> list[str | None]:
    return [r.method for r in sim.requests if r.method in (STATUS, POSITION_METHOD)]


def labels(symbol: str, side: str, **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"account": "oneway", "symbol": symbol, "position_side": side,
                      **more}.items())


def make_poller(sim: Simulator, **settings: Any) -> AccountPoller:
    config = sim_config(sim, accounts=[ONEWAY], **settings)
    return AccountPoller(config.accounts[0], config, lambda state: None)


async def test_each_poll_sends_exactly_one_details_request_right_behind_the_status(
        simulator: Simulator) -> None:
    poller = make_poller(simulator)
    for _ in range(3):
        assert await poller.poll_once()
    await poller.close()
    assert methods(simulator) == [STATUS, POSITION_METHOD] * 3
    connections = {r.connection for r in simulator.requests}
    assert len(connections) == 1  # the same connection, so both describe one moment


async def test_with_position_details_off_no_details_request_is_ever_sent(
        simulator: Simulator) -> None:
    poller = make_poller(simulator, position_details=False)
    assert await poller.poll_once()
    await poller.close()
    assert methods(simulator) == [STATUS]
    assert poller.state.details is None


async def test_no_liquidation_price_means_no_series_and_unicode_symbols_pass(
        simulator: Simulator) -> None:
    account = simulator.accounts["oneway"]
    account.open_position("币安人生USDT", "BOTH", "100", "0.25", isolated=True, leverage=3)
    account.open_position("BTCUSDT", "BOTH", "0.001", "64000")  # cross, tiny: Binance sends "0"
    async with run_exporter(sim_config(simulator, accounts=[ONEWAY])) as running:
        samples = await scrape_when_up(running.server.url, ("oneway",))
    rows = {(r["symbol"], r["positionSide"]): r for r in account.last_positions or []}
    assert float(rows[("BTCUSDT", "BOTH")]["liquidationPrice"]) == 0
    assert ("binance_futures_position_liquidation_price", labels("BTCUSDT", "BOTH")) \
        not in samples
    assert ("binance_futures_position_mark_price", labels("BTCUSDT", "BOTH")) in samples
    unicode_row = rows[("币安人生USDT", "BOTH")]
    assert samples[("binance_futures_position_liquidation_price",
                    labels("币安人生USDT", "BOTH"))] == float(unicode_row["liquidationPrice"])
    assert samples[("binance_futures_position_info",
                    labels("币安人生USDT", "BOTH", margin_asset="USDT"))] == 1


async def test_failed_details_keep_their_last_values_while_the_status_flows(
        simulator: Simulator) -> None:
    poller = make_poller(simulator)
    assert await poller.poll_once()
    details = poller.state.details
    simulator.inject(ErrorAnswer(500, -1001, "Internal error.", method=POSITION_METHOD))
    simulator.accounts["oneway"].set_asset_field("USDT", "walletBalance", "12345.678")
    assert await poller.poll_once()
    await poller.close()
    state = poller.state
    assert state.up and state.errors["api_error"] == 1
    assert state.details is details  # kept until stale_after, like everything else
    assert state.snapshot is not None
    usdt = next(a for a in state.snapshot.assets if a.asset == "USDT")
    assert usdt.amounts[0] == 12345.678


async def test_a_failed_status_publishes_no_half_poll(simulator: Simulator) -> None:
    poller = make_poller(simulator)
    assert await poller.poll_once()
    before = poller.state
    simulator.inject(ErrorAnswer(500, -1001, "Internal error."))
    assert not await poller.poll_once()
    await poller.close()
    assert poller.state.details is before.details  # no new mark price beside old amounts
    assert poller.state.snapshot is before.snapshot


async def test_a_row_only_the_details_list_is_exported_with_its_amount(
        simulator: Simulator) -> None:
    def add_row(result: list[dict[str, Any]]) -> None:
        row = dict(result[0])
        row.update(symbol="龙虾USDT", positionSide="BOTH", positionAmt="-42")
        result.append(row)

    simulator.inject(Mutate(add_row, method=POSITION_METHOD))
    async with run_exporter(sim_config(simulator, accounts=[ONEWAY])) as running:
        samples: Samples = await scrape_when_up(running.server.url, ("oneway",))
    assert samples[("binance_futures_position_position_amt", labels("龙虾USDT", "BOTH"))] == -42
    assert ("binance_futures_position_mark_price", labels("龙虾USDT", "BOTH")) in samples
    assert ("binance_futures_position_notional", labels("龙虾USDT", "BOTH")) not in samples


async def test_an_empty_details_answer_means_no_positions(simulator: Simulator) -> None:
    poller = make_poller(simulator)
    simulator.inject(Mutate(list.clear, method=POSITION_METHOD))
    assert await poller.poll_once()
    await poller.close()
    assert poller.state.details is not None and poller.state.details.positions == ()
