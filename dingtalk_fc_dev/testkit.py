"""What DingTalk does, for your tests: sign and encrypt a delivery, then check the reply.

sender = DingTalkSender(token, aes_key, owner_key)
delivery = sender.build({"EventType": "user_add_org", "userId": ["u1"]})
status, headers, body = call_wsgi(index.handler, delivery.wsgi_environ())
assert sender.check_reply(status, body) == "success"
"""

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from dingtalk_crypto import DingTalkCrypto, DingTalkCryptoError
from dingtalk_fc import wsgi
from dingtalk_fc.events import SUITE_URL_CHECKS
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
    """The message DingTalk expects back: ``success``, or a suite URL check's ``Random``."""
    data = json.loads(plaintext) if isinstance(plaintext, str) else plaintext
    if isinstance(data, dict) and data.get("EventType") in SUITE_URL_CHECKS and isinstance(data.get("Random"), str):
        return data["Random"]
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
        timestamp = timestamp or self.crypto.timestamp_ms()
        nonce = nonce or self.crypto.new_nonce()
        encrypt = self.crypto.encrypt(as_text(plaintext), random_prefix)
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


class CallbackHarness:
    """A configured callback function in-process: send deliveries, read its log records.

    ``environ`` is the function's environment (the DINGTALK_* variables); ``clock`` drives
    both the function and the sender, so timestamps can be moved in tests.
    """

    def __init__(
        self,
        router: Router,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        sender: Optional[DingTalkSender] = None,
    ) -> None:
        self.log = io.StringIO()
        self.runtime = Runtime(router, environ=dict(environ), clock=clock, records=RecordWriter(self.log))
        self.sender = sender or DingTalkSender(
            environ["DINGTALK_TOKEN"], environ["DINGTALK_AES_KEY"], environ["DINGTALK_APP_KEY"], clock=clock
        )

    def app(self, environ: Dict[str, Any], start_response: Any) -> Any:
        return wsgi.serve(self.runtime, environ, start_response)

    def call(self, environ: Dict[str, Any]) -> Reply:
        return Reply(*call_wsgi(self.app, environ))

    def send(self, plaintext: Plaintext, **build: Any) -> Reply:
        """Encrypt, sign and deliver ``plaintext`` through the WSGI entrypoint."""
        return self.call(self.sender.build(plaintext, **build).wsgi_environ())

    @property
    def records(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line]

    @property
    def last_record(self) -> Dict[str, Any]:
        return self.records[-1]
