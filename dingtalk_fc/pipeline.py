"""The transport-free core: verify, decrypt, de-duplicate, dispatch, reply.

Adapters (WSGI for FC 2.0, the event shape of FC 3.0, the local server) turn their request into
a :class:`CallbackRequest` and write back the :class:`CallbackResponse`; nothing here knows
about HTTP servers or FC.
"""

import hashlib
import json
import logging
import re
import time
from collections import namedtuple

import dingtalk_crypto

from . import __version__, errors
from .config import Settings
from .dedup import CLAIMED, DONE, Claim, StoreUnavailable
from .errors import Problem, RequestRejected
from .events import SUITE_URL_CHECKS, URL_CHECKS, Event
from .records import RecordWriter
from .router import Route, Router

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Dict, List, Optional, Tuple

logger = logging.getLogger("dingtalk_fc")

PRODUCT_NAME = "dingtalk-fc-callback"
MAX_NONCE_CHARS = 64
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,16}\Z")  # milliseconds since the epoch


class CallbackRequest(namedtuple("CallbackRequest", "method query body request_id context")):
    """One delivery as an adapter hands it over: ``method`` (str), ``query`` (the raw query
    string, without "?"), ``body`` (bytes), ``request_id`` (str) and ``context`` (the platform's
    invocation context, for the deferred hand-off; may be None)."""

    __slots__ = ()


class CallbackResponse(namedtuple("CallbackResponse", "status body")):
    """What goes back: HTTP ``status`` (int) and ``body`` (bytes, always JSON)."""

    __slots__ = ()

    @property
    def json(self) -> "Any":
        return json.loads(self.body.decode("utf-8"))


class HandOffError(Exception):
    """The deferred event could not be handed to the worker."""


class Deferrer:
    """Hands an event to the worker function; ``payload`` holds no plaintext."""

    def hand_off(self, task_id: str, payload: bytes, context: "Any") -> None:
        raise NotImplementedError


def parse_json(text: str, too_deep: Problem, invalid: Problem) -> "Any":
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestRejected(too_deep) from None
    except ValueError:
        raise RequestRejected(invalid) from None


def parse_query(query: str, max_bytes: int) -> "Tuple[str, str, str]":
    """``(signature, timestamp, nonce)``; either spelling DingTalk uses for each is accepted."""
    if len(query) > max_bytes:
        raise RequestRejected(errors.QUERY_TOO_LONG)
    params = {}  # type: Dict[str, str]
    encoded = "%" in query or "+" in query  # DingTalk's own parameters never are
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if encoded:
            name, value = _unquote(name), _unquote(value)
        if name in params:
            raise RequestRejected(errors.REPEATED_PARAMETER, detail=name)
        params[name] = value
    signature = _one_of(params, "msg_signature", "signature", errors.MISSING_SIGNATURE)
    timestamp = _one_of(params, "timestamp", "timeStamp", errors.MISSING_TIMESTAMP)
    nonce = params.get("nonce", "")
    if not nonce:
        raise RequestRejected(errors.MISSING_NONCE)
    if not TIMESTAMP_PATTERN.match(timestamp):
        raise RequestRejected(errors.INVALID_TIMESTAMP)
    if len(nonce) > MAX_NONCE_CHARS:
        raise RequestRejected(errors.INVALID_NONCE)
    return signature, timestamp, nonce


def _unquote(component: str) -> str:
    """Form-decode a query component (``+`` and ``%XX``), as ``parse_qsl`` would."""
    from urllib.parse import unquote_plus  # only for unusual input: kept off the cold start

    return unquote_plus(component)


def _one_of(params: "Dict[str, str]", preferred: str, alternative: str, missing: Problem) -> str:
    first, second = params.get(preferred, ""), params.get(alternative, "")
    if first and second and first != second:
        raise RequestRejected(errors.REPEATED_PARAMETER, detail=preferred + "/" + alternative)
    value = first or second
    if not value:
        raise RequestRejected(missing)
    return value


def parse_object(text: str, not_object: Problem, field: str, missing: Problem) -> "Dict[str, Any]":
    """A JSON object with a non-empty string ``field``, or the matching refusal."""
    data = parse_json(text, errors.JSON_TOO_DEEP, not_object)
    if not isinstance(data, dict):
        raise RequestRejected(not_object)
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise RequestRejected(missing)
    return data


def parse_encrypt(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRejected(errors.BODY_NOT_UTF8) from None
    return parse_object(text, errors.BODY_NOT_JSON, "encrypt", errors.MISSING_ENCRYPT)["encrypt"]


def parse_event(plaintext: str) -> "Dict[str, Any]":
    return parse_object(plaintext, errors.PLAINTEXT_NOT_OBJECT, "EventType", errors.MISSING_EVENT_TYPE)


def refuse(rejection: RequestRejected, record: "Dict[str, Any]") -> CallbackResponse:
    """The JSON error response for ``rejection``, noting it in the delivery's log ``record``."""
    problem = rejection.problem
    record["outcome"] = rejection.outcome
    record["errcode"] = problem.errcode
    record["errmsg"] = problem.errmsg
    if rejection.detail:
        record["detail"] = rejection.detail
    record["level"] = "error" if problem.status >= 500 else "warning"
    return CallbackResponse(problem.status, json.dumps(errors.error_body(problem)).encode())


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``perf_counter`` reading), to the microsecond.

    Integer division rather than ``round(x, 3)``, which costs more than the rest of the record.
    """
    return int((time.perf_counter() - started) * 1000000) / 1000


def task_id_for(store_key: str) -> str:
    """FC's stateful-invocation task id for an event: stable, and made of safe characters."""
    return "dingtalk-" + hashlib.sha256(store_key.encode("utf-8", "surrogatepass")).hexdigest()[:48]


class CallbackPipeline:
    """Everything between the bytes DingTalk sent and the bytes it gets back.

    ``store`` is a :mod:`dingtalk_fc.dedup` store; ``deferrer`` (optional) hands deferred
    events to the worker. ``clock`` (seconds since the epoch) is injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        router: Router,
        store: "Any",
        deferrer: "Optional[Deferrer]" = None,
        clock: "Callable[[], float]" = time.time,
        records: "Optional[RecordWriter]" = None,
    ) -> None:
        keys = [(settings.token, settings.aes_key), *settings.previous_keys]
        self._ciphers: List[dingtalk_crypto.DingTalkCrypto] = [
            dingtalk_crypto.DingTalkCrypto(token, aes_key, settings.owner_key, clock=clock) for token, aes_key in keys
        ]
        self._current = self._ciphers[0]
        self._settings = settings
        self._router = router
        self._store = store
        self._deferrer = deferrer
        self._clock = clock
        self._records = records or RecordWriter()
        self._key_prefix = settings.owner_key + ":"
        self._health = json.dumps({"name": PRODUCT_NAME, "version": __version__, "status": "ok"}).encode()

    @property
    def max_body_bytes(self) -> int:
        return self._settings.max_body_bytes

    # -- the HTTP function -------------------------------------------------------------------

    def handle(self, request: CallbackRequest) -> CallbackResponse:
        """Answer one delivery and write its log record; never raises."""
        started = time.perf_counter()
        record = {"request_id": request.request_id}  # type: Dict[str, Any]
        try:
            response = self._process(request, record)
        except RequestRejected as rejection:
            response = refuse(rejection, record)
        except Exception:
            logger.exception("internal error (request %s)", request.request_id)
            response = refuse(RequestRejected(errors.INTERNAL_ERROR, outcome="failed"), record)
        record["status"] = response.status
        record["latency_ms"] = elapsed_ms(started)
        self._records.write(record)
        return response

    def _process(self, request: CallbackRequest, record: "Dict[str, Any]") -> CallbackResponse:
        if request.method == "GET":
            record["outcome"] = "health"
            return CallbackResponse(200, self._health)
        if request.method != "POST":
            raise RequestRejected(errors.METHOD_NOT_ALLOWED, detail=request.method[:16])
        signature, timestamp, nonce = parse_query(request.query, self._settings.max_query_bytes)
        encrypt = parse_encrypt(request.body)
        cipher = self._verify(signature, timestamp, nonce, encrypt)
        try:
            plaintext = cipher.decrypt(encrypt)
        except dingtalk_crypto.DecryptionError as error:
            raise RequestRejected.from_cipher_error(error) from None
        data = parse_event(plaintext)
        event_type = record["event_type"] = data["EventType"]
        if event_type in URL_CHECKS:  # answered here, with no I/O
            record["outcome"] = "handled"
            record["level"] = "info"
            random = data.get("Random") if event_type in SUITE_URL_CHECKS else None
            return self._success(random if isinstance(random, str) else None)
        event = Event(data, plaintext)
        self._describe(event, record)
        self._deliver(event, signature, request, record)  # the signature covers timestamp and nonce
        return self._success()

    def _verify(self, signature: str, timestamp: str, nonce: str, encrypt: str) -> dingtalk_crypto.DingTalkCrypto:
        """The cipher whose token signed the request (current first, then previous keys)."""
        for cipher in self._ciphers:
            if cipher.is_valid_signature(signature, timestamp, nonce, encrypt):
                break
        else:
            raise RequestRejected(errors.SIGNATURE_MISMATCH)
        tolerance_ms = self._settings.timestamp_tolerance_s * 1000
        if tolerance_ms and abs(self._clock() * 1000 - int(timestamp)) > tolerance_ms:
            raise RequestRejected(errors.STALE_TIMESTAMP)
        return cipher

    def _success(self, message: "Optional[str]" = None) -> CallbackResponse:
        """The signed, encrypted reply: ``success``, or a suite URL check's ``Random``."""
        return CallbackResponse(200, self._current.reply_body(message or "success"))

    @staticmethod
    def _describe(event: Event, record: "Dict[str, Any]") -> None:
        record["corp_id"] = event.corp_id
        record["event_id"] = event.key
        record.update(event.identifiers)

    def _deliver(self, event: Event, fingerprint: str, request: CallbackRequest, record: "Dict[str, Any]") -> None:
        """Run (or hand off) the event unless it is done or in flight; ``fingerprint`` identifies
        this exact request, so that replaying it is refused while a redelivery is acknowledged."""
        store_key = self._key_prefix + event.key
        run, claim = self._claim_event(store_key, record, fingerprint)
        if not run:
            return
        route = self._router.route(event.type)
        if route is not None and self._is_deferred(route):
            self._hand_off(event, fingerprint, store_key, claim, request, record)
            return
        self._run(event, route, store_key, claim, fingerprint, record)

    def _is_deferred(self, route: Route) -> bool:
        return route.deferred if route.deferred is not None else self._settings.defer_all

    def _run(
        self,
        event: Event,
        route: "Optional[Route]",
        store_key: str,
        claim: "Optional[Claim]",
        fingerprint: str,
        record: "Dict[str, Any]",
    ) -> None:
        try:
            extra = route.handler(event) if route is not None else None
        except Exception:
            logger.exception("handler for %s failed (event %s)", event.type, event.key)
            self._release(store_key, claim, record)
            raise RequestRejected(errors.HANDLER_FAILED, outcome="failed") from None
        self._complete(store_key, claim, fingerprint, record)
        if extra:
            record.update(extra)
        unhandled = route is None or route.catch_all
        record.setdefault("outcome", "unhandled" if unhandled else "handled")
        record.setdefault("level", "info")

    def _hand_off(
        self,
        event: Event,
        fingerprint: str,
        store_key: str,
        claim: "Optional[Claim]",
        request: CallbackRequest,
        record: "Dict[str, Any]",
    ) -> None:
        if self._deferrer is None:
            raise RequestRejected(errors.HANDOFF_FAILED, detail="no worker configured", outcome="failed")
        job = {
            "key": event.key,
            "token": claim.token if claim is not None else "",
            "fingerprint": fingerprint,
            "encrypt": self._current.encrypt(event.plaintext),
            "request_id": request.request_id,
        }
        try:
            self._deferrer.hand_off(task_id_for(store_key), json.dumps(job).encode(), request.context)
        except HandOffError as error:
            self._release(store_key, claim, record)
            raise RequestRejected(errors.HANDOFF_FAILED, detail=str(error)[:200], outcome="failed") from None
        record.setdefault("outcome", "deferred")
        record.setdefault("level", "info")

    # -- the store, failing open or closed -----------------------------------------------------

    def _claim_event(
        self, store_key: str, record: "Dict[str, Any]", fingerprint: str, token: "Optional[str]" = None
    ) -> "Tuple[bool, Optional[Claim]]":
        """``(run the handler?, the claim)``; a duplicate of a done event is not run (and is
        acknowledged), one still in flight elsewhere is refused with 409 so it stays retryable,
        and an exact replay of the request that completed it is refused with 403."""
        claim = self._claim(store_key, record, token)
        if claim is not None and claim.state == DONE and fingerprint and claim.done_by == fingerprint:
            raise RequestRejected(errors.REPLAYED_REQUEST)
        if claim is not None and claim.state == DONE:
            record["outcome"] = "duplicate"
            record["level"] = "info"
            return False, None
        if claim is not None and claim.state != CLAIMED:
            raise RequestRejected(errors.EVENT_IN_FLIGHT, outcome="in_flight")
        return True, claim

    def _claim(self, key: str, record: "Dict[str, Any]", token: "Optional[str]" = None) -> "Optional[Claim]":
        """The claim, or None when the store is down and the policy is to fail open."""
        if record.get("outcome") == "dedup_unavailable":  # already failed once for this request
            return None
        try:
            return self._store.claim(key, self._settings.dedup_in_flight_s, token)
        except StoreUnavailable as error:
            if self._settings.dedup_fail_closed:
                raise RequestRejected(errors.STORE_UNAVAILABLE, detail=str(error)) from None
            record["outcome"] = "dedup_unavailable"
            record["level"] = "warning"
            record["detail"] = str(error)
            return None

    def _complete(self, key: str, claim: "Optional[Claim]", fingerprint: str, record: "Dict[str, Any]") -> None:
        if claim is None:
            return
        try:
            self._store.complete(key, self._settings.dedup_retention_s, fingerprint)
        except StoreUnavailable as error:
            record["store_warning"] = "complete failed: " + str(error)

    def _release(self, key: str, claim: "Optional[Claim]", record: "Dict[str, Any]") -> None:
        if claim is None:
            return
        try:
            self._store.release(key, claim.token)
        except StoreUnavailable as error:
            record["store_warning"] = "release failed: " + str(error)

    # -- the worker function -------------------------------------------------------------------

    def run_deferred(self, payload: bytes, request_id: str) -> str:
        """Run a handed-off event on the worker; raise so FC's async retry policy applies.

        Returns the outcome written to the worker's log record.
        """
        started = time.perf_counter()
        record = {"request_id": request_id, "stage": "worker"}  # type: Dict[str, Any]
        try:
            self._run_deferred(payload, record)
        except RequestRejected as rejection:
            refuse(rejection, record)
            raise
        except Exception:
            logger.exception("worker failed (request %s)", request_id)
            refuse(RequestRejected(errors.INTERNAL_ERROR, outcome="failed"), record)
            raise
        finally:
            record["latency_ms"] = elapsed_ms(started)
            self._records.write(record)
        return record["outcome"]

    def _run_deferred(self, payload: bytes, record: "Dict[str, Any]") -> None:
        job = parse_object(payload.decode("utf-8", "replace"), errors.BODY_NOT_JSON, "encrypt", errors.MISSING_ENCRYPT)
        record["handoff_request_id"] = job.get("request_id")
        plaintext = self._decrypt_any(job["encrypt"])
        event = Event(parse_event(plaintext), plaintext, key=job.get("key") or None)
        record["event_type"] = event.type
        self._describe(event, record)
        store_key = self._key_prefix + event.key
        fingerprint = str(job.get("fingerprint") or "")
        run, claim = self._claim_event(store_key, record, "", token=job.get("token") or None)
        if run:
            self._run(event, self._router.route(event.type), store_key, claim, fingerprint, record)

    def _decrypt_any(self, encrypt: str) -> str:
        """Decrypt a hand-off payload with the current key, or a previous one mid-rotation."""
        try:
            return self._current.decrypt(encrypt)
        except dingtalk_crypto.DecryptionError as error:
            for cipher in self._ciphers[1:]:
                try:
                    return cipher.decrypt(encrypt)
                except dingtalk_crypto.DecryptionError:
                    continue
            raise RequestRejected.from_cipher_error(error) from None
