"""A local HTTP server that speaks FC 3.0's invoke API (2023-03-30), for the project's own client
and Aliyun's SDK to talk to. It verifies the ACS3-HMAC-SHA256 signature with its own reading of
the published algorithm (not the project's signer), the STS token, the asynchronous header and
the task id, and runs the payload through a worker callable with FC's asynchronous retry policy
(inherited from the FC 2.0 stub)."""

import calendar
import hashlib
import hmac
import re
import time
from typing import Any, Dict, List
from urllib.parse import unquote

from stubs.fc2_api import DUPLICATE_TASK, FcApiStub

INVOKE_PATH = re.compile(r"^/2023-03-30/functions/(?P<function>[^/?]+)/invocations(?:\?qualifier=[^&]+)?$")
AUTHORIZATION = re.compile(
    r"^ACS3-HMAC-SHA256 Credential=(?P<key>[^,]+),SignedHeaders=(?P<signed>[^,]+),"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
# Headers the signature must cover. Beyond what ACS3 requires, the stub also demands every
# x-acs-* and x-fc-* header signed, so the invocation type and task id cannot be altered.
MUST_SIGN = {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"}


def expected_signature(secret: str, method: str, path: str, headers: Dict[str, str], signed: List[str]) -> str:
    """Signature V3: HMAC-SHA256 of "ACS3-HMAC-SHA256\\n" + hex SHA-256 of the canonical request."""
    uri, _, query = path.partition("?")
    pairs = sorted(pair.split("=", 1) for pair in query.split("&") if pair)
    lines = [method, uri, "&".join(f"{name}={value}" for name, value in pairs)]
    lines.append("".join(f"{name}:{headers[name].strip()}\n" for name in signed))
    lines.append(";".join(signed))
    lines.append(headers["x-acs-content-sha256"])
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return hmac.new(secret.encode(), f"ACS3-HMAC-SHA256\n{digest}".encode(), hashlib.sha256).hexdigest()


class Fc3ApiStub(FcApiStub):
    """``credentials`` maps access key id to (secret, security token); ``enqueued`` counts the
    202s. ``seen_nonces`` makes a replayed request fail, as FC's nonce check does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen_nonces = set()  # type: set

    def error(self, status: int, code: str, message: str = "") -> tuple:
        return status, {"Code": code, "Message": message, "RequestId": f"stub-{len(self.invocations)}"}

    def conflict(self) -> tuple:
        return self.error(*DUPLICATE_TASK, "async task already exists")

    def check(self, method: str, path: str, lowered: Dict[str, str], body: bytes) -> Any:
        match = INVOKE_PATH.match(path)
        if method != "POST" or not match:
            return self.error(404, "PathNotSupported", f"{method} {path}")
        authorization = AUTHORIZATION.match(lowered.get("authorization", ""))
        if not authorization:
            return self.error(403, "InvalidAuthorization")
        secret, token = self.credentials.get(authorization["key"], (None, None))
        if secret is None:
            return self.error(403, "InvalidAccessKeyId")
        signed = authorization["signed"].split(";")
        if signed != sorted(set(signed)) or not set(signed) <= set(lowered):
            return self.error(403, "InvalidAuthorization", "SignedHeaders not sorted or not sent")
        unsigned = (MUST_SIGN | {name for name in lowered if name.startswith(("x-acs-", "x-fc-"))}) - set(signed)
        if unsigned:
            return self.error(403, "InvalidAuthorization", "unsigned: " + ",".join(sorted(unsigned)))
        if lowered.get("x-acs-security-token") != token:
            return self.error(403, "InvalidSecurityToken")
        if lowered["x-acs-content-sha256"] != hashlib.sha256(body).hexdigest():
            return self.error(400, "ContentSHA256Mismatch")
        if lowered["x-acs-version"] != "2023-03-30" or lowered["x-acs-action"] != "InvokeFunction":
            return self.error(400, "InvalidAction")
        try:
            signed_at = calendar.timegm(time.strptime(lowered["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            return self.error(400, "InvalidDate")
        if abs(time.time() - signed_at) > 900:
            return self.error(403, "RequestTimeTooSkewed")
        expected = expected_signature(secret, method, path, lowered, signed)
        if not hmac.compare_digest(authorization["signature"], expected):
            return self.error(403, "SignatureNotMatch")
        with self.lock:
            if lowered["x-acs-signature-nonce"] in self.seen_nonces:
                return self.error(403, "SignatureNonceUsed")
            self.seen_nonces.add(lowered["x-acs-signature-nonce"])
        if lowered.get("x-fc-invocation-type") != "Async":
            return self.error(400, "InvalidArgument", "expected an asynchronous invocation")
        task_id = lowered.get("x-fc-async-task-id", "")
        if not task_id:
            return self.error(400, "InvalidArgument", "no async task id")
        if len(task_id) > 128 or not re.match(r"[A-Za-z_][A-Za-z0-9_-]*\Z", task_id):
            return self.error(400, "InvalidArgument", "invalid async task id")
        return {"function": unquote(match["function"]), "task_id": task_id}
