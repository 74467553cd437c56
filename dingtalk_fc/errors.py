"""Every way a request can be refused: HTTP status, errcode and a short English errmsg.

Cipher failures keep DingTalk's official 9000xx codes (see :mod:`dingtalk_crypto`); the codes
this project adds start at 900100. The test suite checks the README's error table against
``PROBLEMS``, so the two cannot drift apart.
"""

import dingtalk_crypto

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Dict


class Problem:
    """How a refusal looks on the wire: HTTP ``status`` (int), ``errcode`` (int), ``errmsg`` (str).

    Slots rather than a namedtuple, as for the other small records on the cold start's path:
    building a namedtuple class costs about 0.4 M instructions (callgrind), a plain class next to
    nothing.
    """

    __slots__ = ("errcode", "errmsg", "status")

    def __init__(self, status: int, errcode: int, errmsg: str) -> None:
        self.status = status
        self.errcode = errcode
        self.errmsg = errmsg

    def __repr__(self) -> str:
        return f"Problem({self.status}, {self.errcode}, {self.errmsg!r})"


METHOD_NOT_ALLOWED = Problem(405, 900100, "method not allowed")
MISSING_SIGNATURE = Problem(400, 900101, "missing signature")
MISSING_TIMESTAMP = Problem(400, 900102, "missing timestamp")
MISSING_NONCE = Problem(400, 900103, "missing nonce")
REPEATED_PARAMETER = Problem(400, 900104, "repeated query parameter")
QUERY_TOO_LONG = Problem(414, 900105, "query string too long")
INVALID_CONTENT_LENGTH = Problem(400, 900106, "invalid content-length")
BODY_TOO_LARGE = Problem(413, 900107, "body too large")
BODY_NOT_JSON = Problem(400, 900108, "body is not a JSON object")
MISSING_ENCRYPT = Problem(400, 900109, "body has no encrypt string")
BODY_NOT_UTF8 = Problem(400, 900114, "body is not UTF-8")
JSON_TOO_DEEP = Problem(400, 900115, "JSON nested too deeply")
INVALID_NONCE = Problem(400, 900003, "invalid nonce")
INVALID_TIMESTAMP = Problem(400, 900002, "invalid timestamp")
SIGNATURE_MISMATCH = Problem(403, 900005, "signature mismatch")
STALE_TIMESTAMP = Problem(403, 900110, "timestamp outside tolerance")
PLAINTEXT_NOT_OBJECT = Problem(400, 900112, "plaintext is not a JSON object")
MISSING_EVENT_TYPE = Problem(400, 900113, "plaintext has no string EventType")
EVENT_IN_FLIGHT = Problem(409, 900120, "event already in progress")
HANDLER_FAILED = Problem(500, 900130, "handler failed")
HANDOFF_FAILED = Problem(503, 900131, "deferral failed")
STORE_UNAVAILABLE = Problem(503, 900132, "deduplication store unavailable")
JOB_TOO_LARGE = Problem(413, 900133, "event too large to defer")
STORE_FULL = Problem(503, 900134, "deduplication store full")
BUDGET_SPENT = Problem(503, 900135, "request budget spent")
JOB_NOT_AUTHENTIC = Problem(403, 900150, "worker job not authentic")
JOB_EXPIRED = Problem(403, 900151, "worker job expired")
MISCONFIGURED = Problem(500, 900140, "function misconfigured")
INTERNAL_ERROR = Problem(500, 900199, "internal error")

# One answer for every way a signed ciphertext fails to decrypt: telling "invalid padding" from
# the checks after it would be a CBC padding oracle, letting a holder of the token (not of the
# aes_key) decrypt any captured message about 256 requests a byte. The log's ``detail`` keeps
# the precise reason and its official code (e.g. "900010: owner key mismatch ...").
DECRYPTION_FAILED = Problem(400, dingtalk_crypto.DecryptionError.code, "decryption failed")

PROBLEMS = [value for value in list(globals().values()) if isinstance(value, Problem)]


class RequestRejected(Exception):
    """Raised by any stage to refuse a request or an event; ``detail`` goes to the log only."""

    def __init__(self, problem: Problem, detail: str = "", outcome: str = "rejected") -> None:
        super().__init__(problem.errmsg)
        self.problem = problem
        self.detail = detail
        self.outcome = outcome

    @classmethod
    def from_cipher_error(cls, error: dingtalk_crypto.DecryptionError) -> "RequestRejected":
        return cls(DECRYPTION_FAILED, detail=f"{error.code}: {error.message}")


def error_body(problem: Problem) -> "Dict[str, object]":
    return {"errcode": problem.errcode, "errmsg": problem.errmsg}
