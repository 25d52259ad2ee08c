"""The wire vocabulary of Binance's USDⓈ-M futures WebSocket API, as the simulator speaks it.

Method names and their REQUEST_WEIGHT, the request limits, the error answer
(:class:`ApiError`) and the texts of the errors the simulator sends. Shared by
:mod:`.faults` (a fault names the method it applies to) and :mod:`.server`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACCOUNT_METHOD",
    "CONNECTION_WEIGHT",
    "DEFAULT_RECV_WINDOW",
    "INVALID_REQUEST_WEIGHT",
    "MAX_RECV_WINDOW",
    "METHOD_WEIGHTS",
    "MSG_BAD_KEY",
    "MSG_BAD_SIGNATURE",
    "MSG_KEY_FORMAT",
    "MSG_RECV_WINDOW",
    "PATH",
    "ApiError",
    "malformed",
]

PATH = "/ws-fapi/v1"
ACCOUNT_METHOD = "v2/account.status"
CONNECTION_WEIGHT = 5
METHOD_WEIGHTS = {
    ACCOUNT_METHOD: 5,
    "session.status": 2,
    "session.logon": 2,
    "session.logout": 2,
}
#: Weight charged for frames that are not a request for a known method.
INVALID_REQUEST_WEIGHT = 1
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000

MSG_BAD_SIGNATURE = "Signature for this request is not valid."
MSG_BAD_KEY = "Invalid API-key, IP, or permissions for action."
MSG_KEY_FORMAT = "API-key format invalid."
MSG_RECV_WINDOW = "Timestamp for this request is outside of the recvWindow."


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
