"""A local HTTP server that speaks Function Compute's invoke API (2016-08-15), for the real
``fc2.Client`` to talk to. It checks what FC checks for an asynchronous invocation and runs the
payload through a worker callable, with FC's asynchronous retry policy."""

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Dict, List, Optional

from stubs.loopback import LoopbackServer

# FC's answer to an async task id submitted again: 409 (FC's "task deduplication" guide) with
# this code, the one FC 2.0's API returns (see docs/deferral.md for where it is documented).
DUPLICATE_TASK = (409, "StatefulAsyncInvocationAlreadyExists")
# Another 409 FC documents for its API (a concurrent update of the function): not a duplicate.
CONCURRENT_UPDATE = (409, "ConcurrentUpdateError")
INVOKE_PATH = re.compile(r"^/2016-08-15/services/(?P<service>[^/]+)/functions/(?P<function>[^/]+)/invocations$")


def fc_signature(secret: str, method: str, path: str, headers: Dict[str, str]) -> str:
    """FC's request signature: HMAC-SHA256 over method, MD5, type, date, x-fc-* headers, path."""
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical = "".join(f"{name}:{lowered[name]}\n" for name in sorted(lowered) if name.startswith("x-fc-"))
    string_to_sign = "\n".join(
        [
            method,
            lowered.get("content-md5", ""),
            lowered.get("content-type", ""),
            lowered.get("date", ""),
            canonical + path,
        ]
    )
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class FcApiStub(LoopbackServer):
    """``credentials`` maps access key id to (secret, security token); ``port`` 0 picks one."""

    def __init__(
        self, worker: Callable[[bytes, str], Any], credentials: Dict[str, tuple], retries: int = 3, port: int = 0
    ) -> None:
        self.worker = worker
        self.credentials = credentials
        self.retries = retries
        self.task_ids = set()  # type: set
        self.invocations = []  # type: List[Dict[str, Any]]
        self.worker_runs = []  # type: List[Dict[str, Any]]
        self.fail_next = 0  # answer this many requests with 500, as FC might
        self.refuse_next = []  # type: List[tuple]  # (status, code) answers for the next requests
        self.answer_delay_s = 0.0  # hold every answer this long after deciding it
        self.hold_next = []  # type: List[float]  # hold the next answers this long each (after deciding them)
        self.trickle_s = 0.0  # send the answer one byte per this many seconds
        self.lock = threading.Lock()
        self.threads = []  # type: List[threading.Thread]
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = stub.invoke(self.command, self.path, dict(self.headers.items()), body)
                with stub.lock:
                    held = stub.hold_next.pop(0) if stub.hold_next else 0.0
                time.sleep(stub.answer_delay_s + held)  # FC accepted (or refused) already: the answer is late
                payload = json.dumps(answer).encode() + b" " * (64 if stub.trickle_s else 0)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-fc-request-id", "stub-" + str(len(stub.invocations)))
                self.end_headers()
                for offset in range(len(payload)):  # one byte at a time when trickling
                    if stub.trickle_s:
                        self.wfile.flush()
                        time.sleep(stub.trickle_s)
                    self.wfile.write(payload[offset : offset + 1])

        self.serve(Handler, port)

    # FC's error body: the SDK reads ErrorCode / ErrorMessage, FC's error-code page shows
    # errorCode / errorMessage; either may come back.
    error_fields = ("ErrorCode", "ErrorMessage")

    def error(self, status: int, code: str, message: str = "") -> tuple:
        code_field, message_field = self.error_fields
        return status, {code_field: code, message_field: message}

    def invoke(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> tuple:
        """FC's answer: refusals first, then 409 for a known task id, else 202 and a worker run."""
        lowered = {name.lower(): value for name, value in headers.items()}
        record = {"path": path, "headers": lowered, "body": body}
        with self.lock:
            self.invocations.append(record)
            failing = self.fail_next > 0
            if failing:
                self.fail_next -= 1
            refusal = self.refuse_next.pop(0) if self.refuse_next else None
        if refusal:
            return self.error(*refusal, "refused as told")
        if failing:
            return self.error(500, "InternalServerError", "stub failure")
        checked = self.check(method, path, lowered, body)
        if isinstance(checked, tuple):
            return checked
        if len(body) > 128 * 1024:
            return self.error(413, "PayloadTooLarge")
        task_id = checked["task_id"]
        with self.lock:
            if task_id in self.task_ids:
                return self.conflict()
            self.task_ids.add(task_id)
        record.update(checked)
        thread = threading.Thread(target=self._run, args=(body, task_id), daemon=True)
        self.threads.append(thread)
        thread.start()
        return 202, {}

    def conflict(self) -> tuple:
        return self.error(*DUPLICATE_TASK, "invocation id exists")

    def check(self, method: str, path: str, lowered: Dict[str, str], body: bytes) -> Any:
        """A refusal ``(status, answer)``, or the accepted invocation's fields with its task id."""
        match = INVOKE_PATH.match(path)
        if method != "POST" or not match:
            return self.error(404, "PathNotSupported")
        authorization = lowered.get("authorization", "")
        key_id, _, signature = authorization[len("FC ") :].partition(":")
        secret, token = self.credentials.get(key_id, (None, None))
        if not authorization.startswith("FC ") or secret is None:
            return self.error(403, "InvalidAccessKeyId")
        if lowered.get("x-fc-security-token") != token:
            return self.error(403, "InvalidSecurityToken")
        if not hmac.compare_digest(signature, fc_signature(secret, method, path, lowered)):
            return self.error(403, "SignatureNotMatch")
        if lowered.get("x-fc-invocation-type") != "Async":
            return self.error(400, "InvalidArgument", "expected an asynchronous invocation")
        task_id = lowered.get("x-fc-stateful-async-invocation-id")
        if not task_id:
            return self.error(400, "InvalidArgument", "no stateful invocation id")
        return {"service": match["service"], "function": match["function"], "task_id": task_id}

    def _run(self, payload: bytes, task_id: str) -> None:
        """FC's async policy: the first attempt, then up to ``retries`` more on failure."""
        for attempt in range(1 + self.retries):
            try:
                outcome = self.worker(payload, f"{task_id}-attempt-{attempt}")
            except Exception as error:
                self.worker_runs.append({"task_id": task_id, "attempt": attempt, "error": type(error).__name__})
                time.sleep(0.05)
                continue
            self.worker_runs.append({"task_id": task_id, "attempt": attempt, "outcome": outcome})
            return

    def wait(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def accepted(self) -> List[Dict[str, Any]]:
        return [i for i in self.invocations if "task_id" in i]

    def invocation_for(self, task_id: str) -> Optional[Dict[str, Any]]:
        return next((i for i in self.invocations if i.get("task_id") == task_id), None)
