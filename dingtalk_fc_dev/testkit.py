"""What DingTalk does, for your tests: sign and encrypt a delivery, then check the reply.

sender = DingTalkSender(token, aes_key, owner_key)
delivery = sender.build({"EventType": "user_add_org", "userId": ["u1"]})
status, headers, body = call_wsgi(index.handler, delivery.wsgi_environ())
assert sender.check_reply(status, body) == "success"
"""

import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from dingtalk_crypto import DingTalkCrypto, DingTalkCryptoError
from dingtalk_fc import http_fc2
from dingtalk_fc.dead_letter import record_dead_letter
from dingtalk_fc.defer import Deferrer
from dingtalk_fc.once import HandlerFailed
from dingtalk_fc.records import RecordWriter
from dingtalk_fc.router import Router
from dingtalk_fc.runtime import Runtime

REPLY_KEYS = {"msg_signature", "timeStamp", "nonce", "encrypt"}
DEADLINE_MS = 1500

Plaintext = Union[str, Mapping[str, Any]]


class ReplyError(Exception):
    """The reply is not what DingTalk accepts; the message says why."""


class Delivery(NamedTuple):
    """One signed, encrypted POST as DingTalk sends it."""

    query: str
    body: bytes
    params: Dict[str, str]

    def wsgi_environ(self, method: str = "POST", request_id: str = "test-request", **extra: Any) -> Dict[str, Any]:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": "/",
            "QUERY_STRING": self.query,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(self.body)),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(self.body),
            "fc.context": FakeFcContext(request_id),
        }
        environ.update(extra)
        return environ


class _Namespace:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class FakeFcContext(_Namespace):
    """The attributes of FC's ``fc.context`` the function uses, with placeholder credentials."""

    def __init__(
        self,
        request_id: str = "test-request",
        account_id: str = "1234567890",
        region: str = "cn-hangzhou",
        service: str = "dingtalk",
        function: str = "callback",
    ) -> None:
        super().__init__(
            request_id=request_id,
            account_id=account_id,
            region=region,
            credentials=_Namespace(
                access_key_id="STS.test-access-key-id",
                access_key_secret="test-access-key-secret",  # noqa: S106 (a placeholder)
                security_token="test-security-token",  # noqa: S106 (a placeholder)
            ),
            service=_Namespace(name=service, log_project="", log_store=""),
            function=_Namespace(name=function, handler="index.handler", memory=256, timeout=30),
        )


def expected_reply(plaintext: Plaintext) -> str:
    """The message DingTalk expects back: ``success``, for every event and URL check (suite URL
    checks included, see :data:`dingtalk_fc.events.SUITE_URL_CHECKS`)."""
    return "success"


def as_text(plaintext: Plaintext) -> str:
    if isinstance(plaintext, str):
        return plaintext
    return json.dumps(plaintext, ensure_ascii=False, separators=(",", ":"))


class DingTalkSender:
    """Encrypts and signs like DingTalk, and checks replies like DingTalk."""

    def __init__(self, token: str, aes_key: str, owner_key: str, clock: Callable[[], float] = time.time) -> None:
        self.crypto = DingTalkCrypto(token, aes_key, owner_key, clock=clock)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "DingTalkSender":
        return cls(environ["DINGTALK_TOKEN"], environ["DINGTALK_AES_KEY"], environ["DINGTALK_APP_KEY"])

    def build(
        self,
        plaintext: Plaintext,
        timestamp: Optional[str] = None,
        nonce: Optional[str] = None,
        random_prefix: Optional[bytes] = None,
        both_signatures: bool = True,
    ) -> Delivery:
        """The query and body DingTalk would send for ``plaintext`` (a str or a JSON object)."""
        return self.sign(self.crypto.encrypt(as_text(plaintext), random_prefix), timestamp, nonce, both_signatures)

    def sign(
        self,
        encrypt: str,
        timestamp: Optional[str] = None,
        nonce: Optional[str] = None,
        both_signatures: bool = True,
    ) -> Delivery:
        """The delivery of an ``encrypt`` value, signed at ``timestamp`` (default: now) with
        ``nonce`` (default: a fresh one), as DingTalk signs each delivery and redelivery."""
        timestamp = timestamp or self.crypto.timestamp_ms()
        nonce = nonce or self.crypto.new_nonce()
        signature = self.crypto.signature(timestamp, nonce, encrypt)
        params = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}
        if both_signatures:  # real captures carry both spellings, with the same value
            params = {"signature": signature, **params}
        query = urllib.parse.urlencode(params)
        return Delivery(query, json.dumps({"encrypt": encrypt}).encode(), params)

    def open_reply(self, reply: Any) -> str:
        """Verify a parsed reply object and return the message it carries."""
        if not isinstance(reply, dict) or set(reply) != REPLY_KEYS:
            raise ReplyError("reply must be a JSON object with exactly the keys " + ", ".join(sorted(REPLY_KEYS)))
        if not all(isinstance(value, str) for value in reply.values()):
            raise ReplyError("reply values must be strings")
        timestamp = reply["timeStamp"]
        if len(timestamp) != 13 or not timestamp.isdigit():
            raise ReplyError("timeStamp is not a 13-digit millisecond timestamp")
        if not self.crypto.is_valid_signature(reply["msg_signature"], timestamp, reply["nonce"], reply["encrypt"]):
            raise ReplyError("reply signature does not verify with the configured token")
        try:
            return self.crypto.decrypt(reply["encrypt"])
        except DingTalkCryptoError as error:
            raise ReplyError(f"reply does not decrypt with the configured key: {error}") from None

    def check_reply(self, status: int, body: bytes) -> str:
        """Check an HTTP reply as DingTalk would; return the decrypted message."""
        if status != 200:
            raise ReplyError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        try:
            reply = json.loads(body.decode("utf-8"))
        except ValueError:
            raise ReplyError("reply is not JSON") from None
        return self.open_reply(reply)

    def post(self, url: str, delivery: Delivery, timeout_s: float = 10.0) -> "PostResult":
        """Send ``delivery`` to ``url`` over HTTP; never raises for HTTP errors."""
        if not url.startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        separator = "&" if "?" in url else "?"
        request = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
            url + separator + delivery.query,
            data=delivery.body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return PostResult(status, body, (time.perf_counter() - started) * 1000)


class PostResult(NamedTuple):
    status: int
    body: bytes
    latency_ms: float


def call_wsgi(app: Callable[..., Any], environ: Dict[str, Any]) -> Tuple[int, List[Tuple[str, str]], bytes]:
    """Call a WSGI app in-process: ``(status code, headers, body)``."""
    captured = {}  # type: Dict[str, Any]

    def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = status, headers

    body = b"".join(app(environ, start_response))
    return int(captured["status"].split()[0]), captured["headers"], body


class Reply(NamedTuple):
    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class WorkerRun(NamedTuple):
    """One deferral as the worker ran it, after FC's retries: the ``outcome`` it logged last
    (``failed`` when every attempt raised), what the handler raised (``error``, None when it ran),
    and how many ``attempts`` it took."""

    task_id: str
    outcome: str
    error: Optional[BaseException]
    attempts: int = 1


# FC's asynchronous invocation retries a raising worker this many times by default (template.yml's
# MaxAsyncRetryAttempts, s.yaml's maxAsyncRetryAttempts), then calls the on-failure destination.
ASYNC_RETRIES = 3


class ThreadDeferrer(Deferrer):
    """Stands in for FC asynchronous invocation in tests: each deferral's payload, as the
    callback built it, goes to the worker entrypoint on a thread, retried as FC retries a raising
    worker; when every attempt fails, ``dead_letter`` (if given) gets FC's on-failure document, so
    the dead letter can be re-driven as in production. :meth:`wait` joins the threads.

    The payload is passed on as opaque bytes, so the test runs the real deferral format.
    """

    def __init__(
        self,
        run_worker: Callable[[bytes, str, Any], Any],
        retries: int = ASYNC_RETRIES,
        dead_letter: Optional[Callable[[Dict[str, Any], str], Any]] = None,
    ) -> None:
        self._run_worker = run_worker
        self._retries = retries
        self._dead_letter = dead_letter
        self._threads = []  # type: List[threading.Thread]
        self._runs = []  # type: List[WorkerRun]
        self._lock = threading.Lock()

    def defer(self, task_id: str, payload: bytes, context: Any, deadline: Any) -> None:
        thread = threading.Thread(
            target=self._work, args=(task_id, payload, context), name="worker-" + task_id, daemon=True
        )
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _work(self, task_id: str, payload: bytes, context: Any) -> None:
        for attempt in range(1, self._retries + 2):
            try:
                run = WorkerRun(
                    task_id, self._run_worker(payload, f"worker-{task_id}-{attempt}", context), None, attempt
                )
                break
            except HandlerFailed as failure:
                run = WorkerRun(task_id, "failed", failure.cause, attempt)
            except Exception as raised:
                run = WorkerRun(task_id, getattr(raised, "outcome", "failed"), raised, attempt)
        else:
            if self._dead_letter is not None:
                self._dead_letter(destination_document(task_id, payload, run.attempts), "dead-letter-" + task_id)
        with self._lock:
            self._runs.append(run)

    def wait(self, timeout_s: float = 30.0) -> List[WorkerRun]:
        """Wait for every deferral so far to finish; return all runs, in the order they ended.

        ``timeout_s`` only keeps a hung handler from hanging the test run.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = [thread for thread in self._threads if thread.is_alive()]
            if not pending:
                break
            pending[0].join(max(0.0, deadline - time.monotonic()))
            if pending[0].is_alive():
                raise TimeoutError(f"deferred handler {pending[0].name} still running after {timeout_s} s")
        with self._lock:
            return list(self._runs)


def destination_document(task_id: str, payload: bytes, attempts: int) -> Dict[str, Any]:
    """What FC hands a worker's on-failure destination once every attempt failed."""
    return {
        "timestamp": int(time.time() * 1000),
        "requestContext": {
            "requestId": "worker-" + task_id,
            "functionArn": "acs:fc:cn-hangzhou:1234567890:services/dingtalk.LATEST/functions/worker",
            "condition": "UnhandledInvocationError",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": payload.decode("utf-8"),
        "responseContext": {"statusCode": 200, "functionError": "UnhandledInvocationError"},
        "responsePayload": "{}",
    }


class CallbackHarness:
    """A configured callback function in-process: send deliveries, read its log records.

    ``environ`` is the function's environment (the DINGTALK_* variables); ``clock`` drives
    both the function and the sender, so timestamps can be moved in tests. With
    ``run_deferred``, deferred handlers are deferred with the real payload and run by the
    real worker entrypoint on a thread (instead of FC), retried as FC retries them, and a job that
    fails every attempt is recorded as a dead letter (``dead_letters``), as the function's
    on-failure destination records it: :meth:`wait_for_workers` waits for them.
    """

    def __init__(
        self,
        router: Router,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        sender: Optional[DingTalkSender] = None,
        run_deferred: bool = False,
    ) -> None:
        self.log = io.StringIO()
        self.runtime = Runtime(router, environ=dict(environ), clock=clock, records=RecordWriter(self.log))
        self.workers = ThreadDeferrer(self._run_worker, dead_letter=self._dead_letter) if run_deferred else None
        if self.workers is not None:
            self.runtime.use_deferrer(self.workers)
        self.sender = sender or DingTalkSender(
            environ["DINGTALK_TOKEN"], environ["DINGTALK_AES_KEY"], environ["DINGTALK_APP_KEY"], clock=clock
        )

    def seal_job(self, plaintext: Plaintext, source: str = "push", request_id: str = "test-request") -> bytes:
        """The job the callback would hand the worker for ``plaintext`` (a str or a JSON object,
        or an :class:`~dingtalk_fc.Event`): what :meth:`run_worker` and ``redrive`` take."""
        text = plaintext.plaintext if hasattr(plaintext, "plaintext") else as_text(plaintext)
        return self.runtime.load().jobs.seal(text, source, request_id)

    def run_worker(self, payload: bytes, request_id: str, context: Any = None) -> str:
        """What ``index.worker`` does with a job: its outcome, or it raises (FC would retry it)."""
        return self.runtime.run_worker(payload, request_id, context)

    def _run_worker(self, payload: bytes, request_id: str, context: Any) -> Any:
        return self.run_worker(payload, request_id, context)  # looked up per run: tests may wrap it

    def _dead_letter(self, document: Dict[str, Any], request_id: str) -> None:
        record_dead_letter(json.dumps(document), request_id, self.runtime.records)

    def app(self, environ: Dict[str, Any], start_response: Any) -> Any:
        return http_fc2.serve(self.runtime, environ, start_response)

    def call(self, environ: Dict[str, Any]) -> Reply:
        return Reply(*call_wsgi(self.app, environ))

    def send(self, plaintext: Plaintext, **build: Any) -> Reply:
        """Encrypt, sign and deliver ``plaintext`` through the WSGI entrypoint."""
        return self.call(self.sender.build(plaintext, **build).wsgi_environ())

    def wait_for_workers(self, timeout_s: float = 30.0) -> List[WorkerRun]:
        """Wait for the deferred handlers so far (needs ``run_deferred=True``)."""
        if self.workers is None:
            raise RuntimeError("this harness hands deferred events to FC: build it with run_deferred=True")
        return self.workers.wait(timeout_s)

    @property
    def records(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line]

    @property
    def last_record(self) -> Dict[str, Any]:
        return self.records[-1]

    @property
    def callback_records(self) -> List[Dict[str, Any]]:
        """The records of deliveries (not of the worker): a worker that ends quickly writes its
        record before the callback writes its own, so look for either here rather than last."""
        return [r for r in self.records if r.get("stage") != "worker" and r.get("outcome") != "dead_letter"]

    @property
    def worker_records(self) -> List[Dict[str, Any]]:
        """The records the worker wrote (``"stage": "worker"``), one per attempt."""
        return [record for record in self.records if record.get("stage") == "worker"]

    @property
    def dead_letters(self) -> List[Dict[str, Any]]:
        """The dead-letter records of jobs that failed every attempt (``redrive`` takes them)."""
        return [record for record in self.records if record.get("outcome") == "dead_letter"]
