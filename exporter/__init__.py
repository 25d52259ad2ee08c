"""Prometheus exporter for Binance USDⓈ-M Futures accounts.

Data flows one way: ``config`` -> ``signing`` + ``client`` (one WebSocket API
connection per account; ``userstream`` beside it tells the poller to poll when
Binance pushes an account change) -> ``poller`` (pacing, backoff, health) ->
``snapshot`` (parsed, immutable) -> ``state`` -> ``metrics`` (what is exposed)
-> ``exposition`` (encoded, cached bytes) -> ``http``. ``app`` wires them,
``cli`` parses flags, ``budget`` plans request weight, ``clock`` is the one
source of time. ``simulator`` is a stand-in for Binance, imported only by
``--demo`` and the tests.
"""

__version__ = "0.2.0"
