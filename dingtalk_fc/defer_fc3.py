"""Deferred handlers on FC 3.0: ``InvokeFunction`` (API 2023-03-30), asynchronous, with a task id.

The task id is derived from the event's idempotency key, so FC itself refuses a second deferral
of the same event: HTTP 409 with FC's duplicate-task code, the only answer that counts as
"already deferred" (:func:`dingtalk_fc.defer_fc2.is_duplicate_task`). The request is signed
with ACS3-HMAC-SHA256 by the standard library rather than Aliyun's SDK
(``alibabacloud_fc20230330``): the SDK takes 0.45-1 s to import (968 modules, aiohttp and
cryptography among them, about 40 MB installed), which the first deferral of every instance would
pay inside DingTalk's 1500 ms; this client costs about 2 ms (``tools/bench_fc3_client.py``). This
module is imported at the first deferral only.
"""

import hashlib
import hmac
import os
import time

from .deadline import BudgetSpent, Deadline
from .defer import DeferralFailed, Deferrer
from .defer_fc2 import error_code, is_duplicate_task

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, Mapping, Optional, Tuple

API_VERSION = "2023-03-30"
ALGORITHM = "ACS3-HMAC-SHA256"
TASK_ID_HEADER = "x-fc-async-task-id"
# FC 3.0's Python 3.12 runtime has no ``context.credentials``: the role's STS credentials are
# in these variables instead (3.9 and 3.10 have both).
CREDENTIAL_VARIABLES = (
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def acs3_authorization(
    access_key_id: str, access_key_secret: str, method: str, path: str, headers: "Mapping[str, str]"
) -> str:
    """Aliyun's V3 signature over ``method``, ``path`` (already percent-encoded, no query) and
    every one of ``headers``, which must include ``x-acs-content-sha256``."""
    canonical = {name.lower(): str(value).strip() for name, value in headers.items()}
    names = sorted(canonical)
    canonical_request = "\n".join(
        [
            method,
            path,
            "",  # no query string
            "".join(f"{name}:{canonical[name]}\n" for name in names),
            ";".join(names),
            canonical["x-acs-content-sha256"],
        ]
    )
    string_to_sign = ALGORITHM + "\n" + sha256_hex(canonical_request.encode("utf-8"))
    signature = hmac.new(access_key_secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256)
    return f"{ALGORITHM} Credential={access_key_id},SignedHeaders={';'.join(names)},Signature={signature.hexdigest()}"


def credentials_of(context: "Any", environ: "Mapping[str, str]") -> "Tuple[str, str, str]":
    """``(access_key_id, access_key_secret, security_token)`` of the function's role."""
    credentials = getattr(context, "credentials", None)
    if credentials is not None and getattr(credentials, "access_key_id", None):
        return credentials.access_key_id, credentials.access_key_secret, credentials.security_token or ""
    key_id, secret, token = (environ.get(name, "") for name in CREDENTIAL_VARIABLES)
    if not key_id or not secret:
        raise DeferralFailed("no credentials: give the function a role (FC 3.0 passes its STS credentials)")
    return key_id, secret, token


def invocation_request(
    endpoint: str,
    function: str,
    task_id: str,
    payload: bytes,
    credentials: "Tuple[str, str, str]",
    now: "Optional[float]" = None,
    nonce: "Optional[str]" = None,
) -> "Tuple[str, Dict[str, str]]":
    """The path and signed headers of an asynchronous ``InvokeFunction`` of ``function``."""
    from urllib.parse import quote, urlsplit

    access_key_id, access_key_secret, security_token = credentials
    path = f"/{API_VERSION}/functions/{quote(function, safe='')}/invocations"
    headers = {
        "host": urlsplit(endpoint).netloc,
        "content-type": "application/octet-stream",
        "x-acs-action": "InvokeFunction",
        "x-acs-version": API_VERSION,
        "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "x-acs-signature-nonce": nonce or os.urandom(16).hex(),
        "x-acs-content-sha256": sha256_hex(payload),
        "x-fc-invocation-type": "Async",
        TASK_ID_HEADER: task_id,
    }
    if security_token:
        headers["x-acs-security-token"] = security_token
    headers["Authorization"] = acs3_authorization(access_key_id, access_key_secret, "POST", path, headers)
    return path, headers


def post(endpoint: str, path: str, headers: "Dict[str, str]", body: bytes, timeout_s: float) -> "Tuple[int, str]":
    """One POST, no retry: ``(status, FC's error code or "")``. Raises ``OSError`` or
    ``http.client.HTTPException`` when FC cannot be reached."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    connection_class = http.client.HTTPConnection if url.scheme == "http" else http.client.HTTPSConnection
    connection = connection_class(url.netloc, timeout=max(timeout_s, 0.001))
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read(64 * 1024)
    finally:
        connection.close()
    return response.status, "" if response.status < 300 else error_code(answer)


class Fc3Deferrer(Deferrer):
    """Invokes ``function`` asynchronously through FC 3.0's API with the role's STS credentials.

    ``endpoint`` defaults to ``https://<account_id>.<region>.fc.aliyuncs.com`` from the context.
    """

    def __init__(
        self, function: str, endpoint: "Optional[str]" = None, environ: "Optional[Mapping[str, str]]" = None
    ) -> None:
        self._function = function
        self._endpoint = endpoint
        self._environ = os.environ if environ is None else environ

    def defer(self, task_id: str, payload: bytes, context: "Any", deadline: Deadline) -> None:
        if context is None:
            raise DeferralFailed("no FC context")
        try:  # the budget covers name resolution, the TLS handshake and a trickling answer
            status, code = deadline.call(self._invoke, task_id, payload, context, deadline.remaining())
        except BudgetSpent:
            raise DeferralFailed("FC 3.0 did not answer within the request budget") from None
        if is_duplicate_task(status, code):  # this task id was deferred before
            return
        if not 200 <= status < 300:
            raise DeferralFailed(f"FC 3.0 refused the deferral with {status} {code}".rstrip())

    def _invoke(self, task_id: str, payload: bytes, context: "Any", timeout_s: float) -> "Tuple[int, str]":
        import http.client

        endpoint = self._endpoint or f"https://{context.account_id}.{context.region}.fc.aliyuncs.com"
        credentials = credentials_of(context, self._environ)
        path, headers = invocation_request(endpoint, self._function, task_id, payload, credentials)
        try:
            return post(endpoint, path, headers, payload, timeout_s)
        except (OSError, http.client.HTTPException) as error:
            raise DeferralFailed("FC 3.0 unreachable: " + type(error).__name__) from None
