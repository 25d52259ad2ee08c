"""The wire vocabulary of Binance's USDⓈ-M futures WebSocket API, as the simulator speaks it.

Method names and their REQUEST_WEIGHT, the request limits, the error answer
(:class:`ApiError`) and the texts of the errors the simulator sends. Shared by
:mod:`.faults` (a fault names the method it applies to) and :mod:`.server`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACCOUNT_METHOD",
    "ACCOUNT_V1_METHOD",
    "CONNECTION_WEIGHT",
    "DEFAULT_RECV_WINDOW",
    "INVALID_REQUEST_WEIGHT",
    "MAX_RECV_WINDOW",
    "METHOD_WEIGHTS",
    "MSG_BAD_KEY",
    "MSG_BAD_SIGNATURE",
    "MSG_BAD_SYMBOL",
    "MSG_BANNED",
    "MSG_KEY_FORMAT",
    "MSG_KEY_TYPE",
    "MSG_MALFORMED_REQUEST",
    "MSG_NO_LISTEN_KEY",
    "MSG_RECV_WINDOW",
    "MSG_TOO_MANY_REQUESTS",
    "PATH",
    "POSITION_METHOD",
    "STREAM_PATH",
    "USER_STREAM_METHODS",
    "ApiError",
    "malformed",
]

PATH = "/ws-fapi/v1"
#: The user data stream's route (on fstream.binance.com since the 2026 routing change).
STREAM_PATH = "/private/ws"
ACCOUNT_METHOD = "v2/account.status"
POSITION_METHOD = "v2/account.position"
#: v1 Account Information: the only account method that says which margin mode is on.
ACCOUNT_V1_METHOD = "account.status"
#: USER_STREAM methods: API key only, no signature.
USER_STREAM_METHODS = ("userDataStream.start", "userDataStream.ping", "userDataStream.stop")
CONNECTION_WEIGHT = 5
METHOD_WEIGHTS = {
    ACCOUNT_METHOD: 5,
    POSITION_METHOD: 5,
    ACCOUNT_V1_METHOD: 10,
    "session.status": 2,
    "session.logon": 2,
    "session.logout": 2,
    **dict.fromkeys(USER_STREAM_METHODS, 1),
}
#: Weight charged for frames that are not a request for a known method.
INVALID_REQUEST_WEIGHT = 1
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000

# Error texts as the USDⓈ-M futures "Error Codes" page words them, where they differ
# from spot's (-1003: "requests", not "request weight"; -4056 exists only on futures).
# -1021, -1022, -2014 and -2015 read the same on both pages.
MSG_BAD_SIGNATURE = "Signature for this request is not valid."
MSG_BAD_KEY = "Invalid API-key, IP, or permissions for action."
MSG_KEY_FORMAT = "API-key format invalid."
MSG_RECV_WINDOW = "Timestamp for this request is outside of the recvWindow."
MSG_KEY_TYPE = "Invalid api key type."
MSG_BAD_SYMBOL = "Invalid symbol."
#: -1003 over the limit (status 429); ``{limit}`` is the weight limit per minute.
MSG_TOO_MANY_REQUESTS = (
    "Too many requests; current limit is {limit} requests per minute. "
    "Please use the websocket for live updates to avoid polling the API."
)
#: -1003 while banned (status 418); ``{until}`` is the end of the ban in epoch ms.
MSG_BANNED = (
    "Way too many requests; IP banned until {until}. "
    "Please use the websocket for live updates to avoid bans."
)
#: -1125: a userDataStream.ping for a listen key that expired, was stopped or never was.
MSG_NO_LISTEN_KEY = "This listenKey does not exist."
#: Not on the futures page: what Binance answers to a frame that is not a JSON
#: request object is unknown; this is the simulator's choice.
MSG_MALFORMED_REQUEST = "Malformed request."


class ApiError(Exception):
    """An error answer: HTTP-like ``status`` plus Binance's ``{code, msg[, data]}``."""

    def __init__(self, status: int, code: int, msg: str, data: dict[str, Any] | None = None):
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.data = data

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            body["data"] = self.data
        return body


def malformed(name: str) -> ApiError:
    """The -1102 answer for a missing, empty or malformed parameter ``name``."""
    return ApiError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )
