"""Deferred handlers: hand the event to the worker function through FC asynchronous invocation.

The deferral uses stateful asynchronous invocation with a task id derived from the event's
idempotency key, so FC itself refuses a second deferral of the same event: HTTP 409 with the
code in :data:`DUPLICATE_TASK_CODES`, the only answer that counts as "already deferred". Any
other refusal, another 409 included (FC documents several, e.g. a concurrent update), queued
nothing and fails the deferral. ``fc2`` is imported at the first deferral, so a configured
worker costs nothing to cold starts that defer nothing.
"""

import threading

from .deadline import BudgetSpent, Deadline
from .defer import DeferralFailed, Deferrer

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, Optional, Tuple

ASYNC_HEADERS = {"x-fc-invocation-type": "Async"}
TASK_ID_HEADER = "x-fc-stateful-async-invocation-id"
# FC's error code for an async task id that exists already (with HTTP 409); FC 3.0 publishes no
# other code for it. Where it is documented: docs/deferral.md.
DUPLICATE_TASK_CODES = ("StatefulAsyncInvocationAlreadyExists",)


def is_duplicate_task(status: int, code: str) -> bool:
    """Whether FC's refusal says this task id was queued before (and nothing else)."""
    return status == 409 and code in DUPLICATE_TASK_CODES


# Where FC's JSON error body holds its code: fc2 reads ErrorCode, FC's error-code pages show
# errorCode, FC 3.0's API answers Code.
ERROR_CODE_FIELDS = ("ErrorCode", "errorCode", "Code", "code")


def error_code(body: bytes) -> str:
    """FC's error code from its JSON error body, or "" for anything else."""
    import json

    try:
        answer = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return ""
    if not isinstance(answer, dict):
        return ""
    code = next((answer[field] for field in ERROR_CODE_FIELDS if field in answer), None)
    return code[:64] if isinstance(code, str) else ""


def _bounded_client_class() -> "Any":
    import fc2
    import requests

    class BoundedClient(fc2.Client):
        """fc2's client with a transport that fits the 1500 ms reply budget.

        fc2's own transport retries five times with exponential back-off (seconds, far past
        DingTalk's deadline) and logs the request headers, STS token included, at ERROR on any
        4xx. This keeps fc2's endpoint handling and request signing and replaces only that:
        one attempt, bounded by ``Timeout``, nothing logged.
        """

        session = requests.Session()

        def _do_request(self, method, path, headers, params=None, body=None):
            url = self.endpoint + path
            try:
                response = self.session.request(
                    method, url, headers=headers, params=params, data=body, timeout=self.timeout
                )
            except requests.RequestException as error:
                raise DeferralFailed("FC unreachable: " + type(error).__name__) from None
            if response.status_code >= 400:
                raise fc2.fc_exceptions.FcError(
                    f"FC answered {response.status_code}",
                    response.status_code,
                    error_code(response.content[: 64 * 1024]),
                    response.headers.get("x-fc-request-id", ""),
                )
            return response

    return BoundedClient


class Fc2Deferrer(Deferrer):
    """Invokes ``function`` asynchronously with the STS credentials of the current invocation.

    ``endpoint`` defaults to ``https://<account_id>.<region>.fc.aliyuncs.com``; ``service``
    defaults to the calling function's own service.
    """

    def __init__(
        self,
        function: str,
        service: "Optional[str]" = None,
        endpoint: "Optional[str]" = None,
        timeout_s: float = 1.0,
    ) -> None:
        self._function = function
        self._service = service
        self._endpoint = endpoint
        self._timeout_s = timeout_s
        self._client_class: Any = None  # fc2 is imported at the first deferral, off the cold start
        self._clients: Dict[Tuple[str, str, str, str], Any] = {}
        self._lock = threading.Lock()

    def _client(self, context: "Any") -> "Any":
        credentials = context.credentials
        endpoint = self._endpoint or f"https://{context.account_id}.{context.region}.fc.aliyuncs.com"
        cache_key = (
            endpoint,
            credentials.access_key_id,
            credentials.access_key_secret,
            credentials.security_token or "",
        )
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                self._clients.clear()  # STS credentials rotate: keep only the current client
                if self._client_class is None:
                    self._client_class = _bounded_client_class()
                client = self._client_class(
                    endpoint=endpoint,
                    accessKeyID=credentials.access_key_id,
                    accessKeySecret=credentials.access_key_secret,
                    securityToken=credentials.security_token or "",
                    Timeout=self._timeout_s,
                )
                self._clients[cache_key] = client
        return client

    def defer(self, task_id: str, payload: bytes, context: "Any", deadline: Deadline) -> None:
        if context is None or getattr(context, "credentials", None) is None:
            raise DeferralFailed("no FC context with credentials")
        headers = dict(ASYNC_HEADERS)
        headers[TASK_ID_HEADER] = task_id
        try:  # the budget covers fc2's first import, name resolution and a trickling answer
            deadline.call(self._invoke, context, headers, payload)
        except BudgetSpent:
            raise DeferralFailed("FC did not answer within the request budget") from None

    def _invoke(self, context: "Any", headers: "Dict[str, str]", payload: bytes) -> None:
        import fc2

        service = self._service or context.service.name
        try:
            self._client(context).invoke_function(service, self._function, payload=payload, headers=headers)
        except fc2.fc_exceptions.FcError as error:
            if is_duplicate_task(error.status_code, error.err_code):  # this task id was deferred before
                return
            raise DeferralFailed(
                f"FC refused the deferral with {error.status_code} {error.err_code}".rstrip()
            ) from None
