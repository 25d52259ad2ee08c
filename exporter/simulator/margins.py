"""Margin arithmetic over an account's rows: per-asset figures and liquidation prices.

Pure functions of rows with their figures (:mod:`.positions`), of the
per-asset state, and of how to value an asset in USD.
:class:`~.accounts.SimAccount` feeds them its state; both answers and the
market's liquidation engine use them, so they agree with each other.

A cross margin pool is the set of assets whose cross balance backs a cross
position: its margin asset in single-asset mode, every asset in multi-assets
mode (valued in USD at the current marks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from .positions import Figures, Position, liquidation_price, margin_asset

__all__ = [
    "ASSET_FIELDS",
    "Key",
    "PerAsset",
    "Rows",
    "ToUsd",
    "asset_figures",
    "liquidation_prices",
    "pool_maintenance",
    "pool_margin",
]

_ZERO = Decimal(0)

#: Per-asset decimal fields in the order Binance sends them.
ASSET_FIELDS = (
    "walletBalance",
    "unrealizedProfit",
    "marginBalance",
    "maintMargin",
    "initialMargin",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "crossWalletBalance",
    "crossUnPnl",
    "availableBalance",
    "maxWithdrawAmount",
)

Key = tuple[str, str]  # (symbol, side)
Rows = list[tuple[Position, Figures]]  # every row with its figures at the current marks
PerAsset = dict[str, dict[str, Decimal]]  # asset -> field of ASSET_FIELDS -> value
ToUsd = Callable[[Decimal, str], Decimal]  # (amount, asset) -> its value in USD


def asset_figures(
    asset: str,
    rows: Rows,
    *,
    wallet: Decimal,
    open_order_margin: Decimal,
    overrides: Mapping[str, Decimal],
) -> dict[str, Decimal]:
    """The :data:`ASSET_FIELDS` of ``asset`` from the rows margined in it.

    ``open_order_margin`` is margin of orders beside the rows' own; a field in
    ``overrides`` replaces the computed value, and the fields derived from it
    follow.
    """
    mine = [(p, f) for p, f in rows if p.margin_asset == asset]
    every = [f for _, f in mine]
    cross = [f for p, f in mine if not p.isolated]
    values: dict[str, Decimal] = {}

    def pick(name: str, computed: Decimal) -> Decimal:
        values[name] = overrides.get(name, computed)
        return values[name]

    def total(of: Iterable[Decimal]) -> Decimal:
        return sum(of, _ZERO)

    wallet = pick("walletBalance", wallet)
    pnl = pick("unrealizedProfit", total(f.unrealized_profit for f in every))
    pick("marginBalance", wallet + pnl)
    pick("maintMargin", total(f.maint_margin for f in every))
    position_margin = pick("positionInitialMargin", total(f.position_initial_margin for f in every))
    order_margin = pick(
        "openOrderInitialMargin",
        open_order_margin + total(f.open_order_initial_margin for f in every),
    )
    pick("initialMargin", position_margin + order_margin)
    cross_wallet = pick("crossWalletBalance", wallet - total(f.isolated_wallet for f in every))
    cross_pnl = pick("crossUnPnl", total(f.unrealized_profit for f in cross))
    available = pick(
        "availableBalance",
        cross_wallet + cross_pnl - total(f.position_initial_margin for f in cross) - order_margin,
    )
    pick("maxWithdrawAmount", max(_ZERO, min(cross_wallet, available)))
    return values


def pool_margin(pool: Iterable[str], per_asset: PerAsset, usd: ToUsd) -> Decimal:
    """Cross wallet balance plus cross unrealized profit of the pool's assets, in USD."""
    return sum(
        (usd(per_asset[a]["crossWalletBalance"] + per_asset[a]["crossUnPnl"], a) for a in pool),
        _ZERO,
    )


def pool_maintenance(
    pool: Iterable[str], rows: Rows, usd: ToUsd, *, besides: str | None = None
) -> Decimal:
    """Maintenance margin of the pool's cross positions (other than ``besides``'), in USD."""
    assets = set(pool)
    return sum(
        (
            usd(f.maint_margin, p.margin_asset)
            for p, f in rows
            if p.amount and not p.isolated and p.margin_asset in assets and p.symbol != besides
        ),
        _ZERO,
    )


def liquidation_prices(
    rows: Rows, per_asset: PerAsset, pool_of: Callable[[str], set[str]], usd: ToUsd
) -> dict[Key, Decimal]:
    """Each position's liquidation price, from the margins the status answer shows.

    An isolated position is backed by its isolated wallet. The cross positions
    of one symbol (one mark; both sides of a hedge pair) are backed by the
    margin of their pool (``pool_of(margin asset)``) less their own profit,
    against the maintenance margin of the pool's other cross positions. Rows
    without a position are absent.
    """
    prices: dict[Key, Decimal] = {}
    cross: dict[str, Rows] = {}
    for row, row_figures in rows:
        if row.amount and row.isolated:
            key = (row.symbol, row.side)
            prices[key] = liquidation_price([row], row_figures.isolated_wallet, _ZERO)
        elif row.amount:
            cross.setdefault(row.symbol, []).append((row, row_figures))
    for symbol, group in cross.items():
        pool = pool_of(margin_asset(symbol))
        own_profit = sum((usd(f.unrealized_profit, p.margin_asset) for p, f in group), _ZERO)
        price = liquidation_price(
            [p for p, _ in group],
            pool_margin(pool, per_asset, usd) - own_profit,
            pool_maintenance(pool, rows, usd, besides=symbol),
        )
        prices.update({(p.symbol, p.side): price for p, _ in group})
    return prices
