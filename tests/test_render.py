"""The incremental exposition equals the reference render byte for byte."""

from __future__ import annotations

import json
import random
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.exposition import Exposition, render_page
from exporter.simulator import Simulator
from exporter.snapshot import RateLimit, parse_account_status
from exporter.state import AccountState, RequestDurations

NOW = 1_800_000_000.0


def states_from_simulator(count: int, seed: int) -> list[AccountState]:
    """Realistic states: answers of simulated accounts of every shape."""
    sim = Simulator(seed=seed, lively=False)
    states = []
    for index in range(count):
        account = sim.add_account(f"acct-{index:02d}", api_key=f"key{index}", api_secret="s",
                                  multi_assets=index % 2 == 1, hedge_mode=index % 3 == 1,
                                  positions=index % 4)
        result = json.loads(json.dumps(account.result()))
        snapshot, _ = parse_account_status(result, received_at=NOW - 1)
        states.append(replace(
            AccountState.initial(account.name, (0.1, 1.0)),
            snapshot=snapshot,
            expires_at=NOW + 10, rate_limits=(RateLimit("REQUEST_WEIGHT", "MINUTE", 1, 2400, 5),),
            up=True, last_success=NOW - 1, errors={"timeout": index},
            connections=1, durations=RequestDurations.empty((0.1, 1.0)).observe(0.05 * index),
            clock_offset=0.001 * index, rows_skipped={("asset", "duplicate"): index}))
    return states


def test_incremental_render_matches_the_reference_through_changes() -> None:
    rng = random.Random(3)
    states = states_from_simulator(6, seed=11)
    exposition = Exposition(__version__)
    assert exposition.render_now(NOW) == render_page((), NOW, __version__)
    for step in range(12):
        index = rng.randrange(len(states))
        changed = states[index]
        if step % 4 == 3:  # stale: its data must vanish, its health stay
            changed = replace(changed, expires_at=NOW - 1, up=False)
        elif step % 4 == 1:  # a position closes
            snapshot = changed.snapshot
            assert snapshot is not None
            changed = replace(changed, snapshot=replace(snapshot,
                                                        positions=snapshot.positions[1:]))
        else:
            changed = replace(changed, errors={"auth": step}, up=step % 2 == 0)
        states[index] = changed
        for state in rng.sample(states, len(states)):  # publication order must not matter
            exposition.publish(state)
        page = exposition.render_now(NOW)
        assert page == render_page(states, NOW, __version__), f"step {step}"
    families = {f.name for f in text_string_to_metric_families(page.text.decode())}
    assert "binance_futures_position_notional" in families


def test_only_changed_accounts_are_reencoded() -> None:
    states = states_from_simulator(3, seed=5)
    exposition = Exposition(__version__)
    for state in states:
        exposition.publish(state)
    exposition.render_now(NOW)
    fragments = dict(exposition._fragments)
    exposition.publish(replace(states[1], up=False))
    exposition.render_now(NOW)
    assert exposition._fragments["acct-00"] is fragments["acct-00"]
    assert exposition._fragments["acct-02"] is fragments["acct-02"]
    assert exposition._fragments["acct-01"] is not fragments["acct-01"]
