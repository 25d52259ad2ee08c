"""The Binance fields the exporter reads, each with the metric it becomes and its HELP.

One table per kind of row. Parsing (:mod:`exporter.snapshot`) reads the
fields in table order and the metrics (:mod:`exporter.metrics`) name and
describe their families from the same rows, so exporting one more Binance
field is one line here.

Units follow Binance: account totals are USDT in single-asset mode (where they
count the USDT asset only) and USD in multi-assets mode; per-asset amounts are
in that asset; position amounts are in contracts of the symbol's base asset and
money amounts of a position in its margin asset.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "ASSET_FIELDS",
    "POSITION_DETAIL_FIELDS",
    "POSITION_FIELDS",
    "TOTAL_FIELDS",
    "Field",
    "snake_case",
]


def snake_case(name: str) -> str:
    """``totalCrossUnPnl`` -> ``total_cross_un_pnl``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Field(NamedTuple):
    """One numeric Binance field: its JSON key, metric name suffix and HELP text."""

    key: str
    help: str
    suffix: str = ""  # the metric name suffix when it is not snake_case(key)

    @property
    def metric_suffix(self) -> str:
        return self.suffix or snake_case(self.key)


_TOTAL_UNIT = (" (USDT in single-asset mode, counting the USDT asset only; USD in multi-assets "
               "mode).")
_ASSET_UNIT = ", in the asset's unit."
_MARGIN_UNIT = ", in the position's margin asset."

TOTAL_FIELDS: tuple[Field, ...] = tuple(Field(key, text + _TOTAL_UNIT) for key, text in (
    ("totalInitialMargin", "Total initial margin required at the current mark price"),
    ("totalMaintMargin", "Total maintenance margin required"),
    ("totalWalletBalance", "Total wallet balance"),
    ("totalUnrealizedProfit", "Total unrealized profit"),
    ("totalMarginBalance", "Total margin balance (wallet balance plus unrealized profit)"),
    ("totalPositionInitialMargin",
     "Initial margin required for positions at the current mark price"),
    ("totalOpenOrderInitialMargin",
     "Initial margin required for open orders at the current mark price"),
    ("totalCrossWalletBalance", "Cross-margin wallet balance"),
    ("totalCrossUnPnl", "Unrealized profit of cross-margin positions"),
    ("availableBalance", "Available balance"),
    ("maxWithdrawAmount", "Maximum amount that can be transferred out"),
))

ASSET_FIELDS: tuple[Field, ...] = tuple(Field(key, text + _ASSET_UNIT) for key, text in (
    ("walletBalance", "Wallet balance"),
    ("unrealizedProfit", "Unrealized profit"),
    ("marginBalance", "Margin balance (wallet balance plus unrealized profit)"),
    ("maintMargin", "Maintenance margin required"),
    ("initialMargin", "Initial margin required at the current mark price"),
    ("positionInitialMargin", "Initial margin required for positions at the current mark price"),
    ("openOrderInitialMargin",
     "Initial margin required for open orders at the current mark price"),
    ("crossWalletBalance", "Cross-margin wallet balance"),
    ("crossUnPnl", "Unrealized profit of cross-margin positions"),
    ("availableBalance", "Available balance"),
    ("maxWithdrawAmount", "Maximum amount that can be transferred out"),
))

# From v2/account.status.
POSITION_FIELDS: tuple[Field, ...] = (
    Field("positionAmt", "Position size in contracts of the symbol's base asset; negative for "
                         "shorts in one-way and hedge mode, 0 for a row with open orders only."),
    Field("unrealizedProfit", "Unrealized profit" + _MARGIN_UNIT),
    Field("isolatedMargin", "Isolated margin (0 for cross-margin positions)" + _MARGIN_UNIT),
    Field("notional", "Notional value at the mark price, negative for shorts" + _MARGIN_UNIT),
    Field("isolatedWallet",
          "Isolated wallet balance (0 for cross-margin positions)" + _MARGIN_UNIT),
    Field("initialMargin", "Initial margin required at the current mark price" + _MARGIN_UNIT),
    Field("maintMargin", "Maintenance margin required" + _MARGIN_UNIT),
)

# From v2/account.position; fields both methods carry come from v2/account.status.
POSITION_DETAIL_FIELDS: tuple[Field, ...] = (
    Field("entryPrice", "Average entry price."),
    Field("breakEvenPrice", "Break-even price (entry price adjusted for fees)."),
    Field("markPrice", "Mark price Binance values the position at."),
    Field("liquidationPrice",
          "Liquidation price; absent when Binance reports none (it sends 0 then)."),
    Field("positionInitialMargin",
          "Initial margin of the position at the current mark price" + _MARGIN_UNIT),
    Field("openOrderInitialMargin",
          "Initial margin of the symbol's open orders at the current mark price" + _MARGIN_UNIT),
    Field("bidNotional", "Notional value of open buy orders" + _MARGIN_UNIT),
    Field("askNotional", "Notional value of open sell orders" + _MARGIN_UNIT),
)
