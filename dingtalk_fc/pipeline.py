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
from .deadline import Deadline
from .dedup import CLAIMED, DONE, Claim, StoreFull, StoreUnavailable
from .errors import Problem, RequestRejected
from .events import SUITE_URL_CHECKS, URL_CHECKS, Event, bounded_text
from .jobs import MAX_JOB_BYTES, REJECTED_ITEM, JobSealer
from .records import RecordWriter, merge_returned
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
    """Hands an event to the worker function; ``payload`` is a sealed job (no plaintext)."""

    def hand_off(self, task_id: str, payload: bytes, context: "Any", deadline: Deadline) -> None:
        """Return once FC accepted the invocation or says ``task_id`` exists already; raise
        :class:`HandOffError` otherwise, within ``deadline``."""
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
    """FC's asynchronous task id for an event: stable, and made of safe characters.

    It is also the token of a deferred event's claim, so the worker can adopt the claim whatever
    happened to the request that handed it off (FC refusing a second task with this id is what
    keeps a re-handed-off event from running twice).
    """
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
        self._jobs = JobSealer(self._ciphers, clock)
        self._settings = settings
        self._router = router
        self._store = store
        self._deferrer = deferrer
        self._clock = clock
        self._records = records or RecordWriter()
        self._key_prefix = settings.owner_key + ":"
        self._budget_s = settings.request_budget_ms / 1000
        self._store_timeout_s = settings.dedup_timeout_ms / 1000
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
        if request.method in ("GET", "HEAD"):
            record["outcome"] = "health"
            return CallbackResponse(200, self._health)
        if request.method != "POST":
            raise RequestRejected(errors.METHOD_NOT_ALLOWED, detail=request.method[:16])
        deadline = Deadline(self._budget_s)
        signature, timestamp, nonce = parse_query(request.query, self._settings.max_query_bytes)
        encrypt = parse_encrypt(request.body)
        cipher, plaintext = self._open(signature, timestamp, nonce, encrypt)
        data = parse_event(plaintext)
        event_type = data["EventType"]
        record["event_type"] = bounded_text(event_type)
        if event_type in URL_CHECKS:  # answered here, with no I/O
            record["outcome"] = "handled"
            record["level"] = "info"
            random = data.get("Random") if event_type in SUITE_URL_CHECKS else None
            return self._success(cipher, random if isinstance(random, str) else None)
        # the signature covers timestamp and nonce: it tells an exact replay from a redelivery
        self._deliver(Event(data, plaintext), signature, request.request_id, request.context, record, deadline)
        return self._success(cipher)

    def _open(
        self, signature: str, timestamp: str, nonce: str, encrypt: str
    ) -> "Tuple[dingtalk_crypto.DingTalkCrypto, str]":
        """The key pair that signed the request, and the plaintext it decrypts.

        Every pair whose token verifies the signature is tried in turn (current first): a
        rotation may change the aes_key and keep the token.
        """
        first_error = None  # type: Optional[dingtalk_crypto.DecryptionError]
        verified = False
        for cipher in self._ciphers:
            if not cipher.is_valid_signature(signature, timestamp, nonce, encrypt):
                continue
            if not verified:
                verified = True
                self._check_timestamp(timestamp)
            try:
                return cipher, cipher.decrypt(encrypt)
            except dingtalk_crypto.DecryptionError as error:
                first_error = first_error or error
        if first_error is None:
            raise RequestRejected(errors.SIGNATURE_MISMATCH)
        raise RequestRejected.from_cipher_error(first_error) from None

    def _check_timestamp(self, timestamp: str) -> None:
        tolerance_ms = self._settings.timestamp_tolerance_s * 1000
        if tolerance_ms and abs(self._clock() * 1000 - int(timestamp)) > tolerance_ms:
            raise RequestRejected(errors.STALE_TIMESTAMP)

    @staticmethod
    def _success(cipher: dingtalk_crypto.DingTalkCrypto, message: "Optional[str]" = None) -> CallbackResponse:
        """The reply, signed and encrypted with the pair that signed the request (DingTalk, until
        its console is switched, reads replies only with the old pair): ``success``, or a suite
        URL check's ``Random``."""
        return CallbackResponse(200, cipher.reply_body(message or "success"))

    # -- events from any source: push, recovery, re-drive ----------------------------------------

    def process_event(
        self,
        event: Event,
        request_id: str,
        context: "Any",
        source: str,
        deadline: Deadline,
        retried: bool = True,
    ) -> "Dict[str, Any]":
        """De-duplicate and run (or hand off) an event that did not come as a push; write and
        return its record (``source`` says where it came from). Never raises.

        ``retried=False``: nobody will offer the event again (recovery without a worker), so one
        in flight elsewhere is an error to re-drive, not a warning: the holder may be dead.
        """
        started = time.perf_counter()
        record = {"request_id": request_id, "source": source, "event_type": bounded_text(event.type)}
        try:
            self._deliver(event, "", request_id, context, record, deadline, source)
        except RequestRejected as rejection:
            refuse(rejection, record)
        except Exception:
            logger.exception("internal error (request %s)", request_id)
            refuse(RequestRejected(errors.INTERNAL_ERROR, outcome="failed"), record)
        if not retried and record.get("outcome") == "in_flight":
            record["level"] = "error"
            record["detail"] = (
                f"in flight elsewhere and not retried: redrive it from the journal once the in-flight "
                f"lease ({self._settings.dedup_in_flight_s} s) has passed, if it did not complete"
            )
        record["latency_ms"] = elapsed_ms(started)
        self._records.write(record)
        return record

    def seal_job(self, event: Event, source: str, request_id: str) -> bytes:
        """``event`` as a worker job: what the worker function and a re-drive accept."""
        return self._jobs.seal(event.plaintext, source, request_id)

    def seal_text(self, text: str, source: str, request_id: str) -> bytes:
        """``text`` encrypted and authenticated like a job, but never openable as one: how
        recovery keeps a failed-list item it could not parse (DingTalk deleted it) without
        logging its content; see :meth:`open_text`."""
        return self._jobs.seal(text, source, request_id, purpose=REJECTED_ITEM)

    def open_text(self, payload: bytes, max_age_s: "Optional[float]" = None) -> str:
        """The text :meth:`seal_text` sealed; :class:`RequestRejected` unless it is authentic and
        younger than ``max_age_s`` (default: the TTL, as for jobs)."""
        age = max_age_s or self._settings.dedup_retention_s
        return self._jobs.open(payload, age, REJECTED_ITEM).plaintext

    @property
    def has_worker(self) -> bool:
        return self._deferrer is not None

    def retry_on_worker(
        self, event: Event, request_id: str, context: "Any", source: str, deadline: Deadline
    ) -> "Dict[str, Any]":
        """Hand an event that failed (or was in flight) outside a push to the worker, whose
        queue holds it, retries it and dead-letters it; write and return the record.

        No claim is taken here: the worker adopts the event's claim, or finds it done, or in
        flight and raises, so FC retries it later.
        """
        started = time.perf_counter()
        record = {"request_id": request_id, "source": source, "stage": "retry", "event_type": bounded_text(event.type)}
        record["event_id"] = bounded_text(event.key)
        store_key = self._key_prefix + event.key
        try:
            job = self.seal_job(event, source, request_id)
            self._hand_off(job, store_key, task_id_for(store_key), None, context, record, deadline)
        except RequestRejected as rejection:
            refuse(rejection, record)
        record["latency_ms"] = elapsed_ms(started)
        self._records.write(record)
        return record

    @staticmethod
    def _describe(event: Event, record: "Dict[str, Any]") -> None:
        record["corp_id"] = bounded_text(event.corp_id)
        record["event_id"] = bounded_text(event.key)
        record.update(event.identifiers)

    def _deliver(
        self,
        event: Event,
        fingerprint: str,
        request_id: str,
        context: "Any",
        record: "Dict[str, Any]",
        deadline: Deadline,
        source: str = "push",
    ) -> None:
        """Run (or hand off) the event unless it is done or in flight; ``fingerprint`` identifies
        this exact request, so a replay of the one that completed it is flagged as such."""
        self._describe(event, record)
        store_key = self._key_prefix + event.key
        route = self._router.route(event.type)
        deferred = route is not None and self._is_deferred(route)
        task_id = task_id_for(store_key) if deferred else None
        claim = self._claim_event(store_key, record, fingerprint, deadline, token=task_id)
        if record.get("outcome") == "duplicate":
            return
        if deferred:
            job = self._jobs.seal(event.plaintext, source, request_id, fingerprint)
            if source == "push" or len(job) <= MAX_JOB_BYTES:
                self._hand_off(job, store_key, task_id or "", claim, context, record, deadline)
                return
            # FC can never queue it; recovery and redrive are not held to a push's deadline: run it here
            record["detail"] = f"ran here: its job of {len(job)} bytes is over FC's {MAX_JOB_BYTES}"
        self._run(event, route, store_key, claim, fingerprint, record, deadline)

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
        deadline: Deadline,
    ) -> None:
        try:
            returned = route.handler(event) if route is not None else None
        except Exception:
            logger.exception("handler for %s failed (event %s)", bounded_text(event.type), bounded_text(event.key))
            self._release(store_key, claim, record)
            raise RequestRejected(errors.HANDLER_FAILED, outcome="failed") from None
        # the handler ran: from here on nothing may turn this delivery into a failure
        self._complete(store_key, claim, fingerprint, record, deadline)
        unhandled = route is None or route.catch_all
        record.setdefault("outcome", "unhandled" if unhandled else "handled")
        record.setdefault("level", "info")
        merge_returned(record, returned, event.type)

    def _hand_off(
        self,
        job: bytes,
        store_key: str,
        task_id: str,
        claim: "Optional[Claim]",
        context: "Any",
        record: "Dict[str, Any]",
        deadline: Deadline,
    ) -> None:
        """Give the sealed ``job`` to the worker; on any failure release the claim and refuse.

        Releasing is safe even when FC may have queued the job: the claim's token is the task
        id, so the worker adopts a claim a redelivery re-took, and FC refuses to queue the same
        task id twice.
        """
        try:
            if len(job) > MAX_JOB_BYTES:
                raise RequestRejected(errors.JOB_TOO_LARGE, detail=f"job of {len(job)} bytes", outcome="failed")
            if self._deferrer is None:
                raise HandOffError("no worker configured")
            # bounded like a push's wherever it comes from: one unanswered call must not spend a recovery run
            self._deferrer.hand_off(task_id, job, context, Deadline(min(deadline.remaining(), self._budget_s)))
        except RequestRejected:
            self._release(store_key, claim, record)
            raise
        except Exception as error:
            if not isinstance(error, HandOffError):
                logger.exception("hand-off failed unexpectedly")
            self._release(store_key, claim, record)
            detail = str(error)[:200] if isinstance(error, HandOffError) else type(error).__name__
            raise RequestRejected(errors.HANDOFF_FAILED, detail=detail, outcome="failed") from None
        record.setdefault("outcome", "deferred")
        record.setdefault("level", "info")

    # -- the store, failing open or closed -----------------------------------------------------

    def _claim_event(
        self,
        store_key: str,
        record: "Dict[str, Any]",
        fingerprint: str,
        deadline: Deadline,
        token: "Optional[str]" = None,
        adopt: bool = False,
        lease_s: "Optional[float]" = None,
    ) -> "Optional[Claim]":
        """The claim to run the event under (None when the store is down and failing open).

        A duplicate of a done event is noted as outcome ``duplicate`` (acknowledged, not run;
        an exact replay of the request that completed it is flagged ``replay``); one still in
        flight elsewhere is refused with 409 so it stays retryable.
        """
        try:
            claim = self._store.claim(
                store_key, lease_s or self._settings.dedup_in_flight_s, token, adopt=adopt, deadline=deadline
            )
        except StoreFull as error:
            raise RequestRejected(errors.STORE_FULL, detail=str(error)) from None
        except StoreUnavailable as error:
            if self._settings.dedup_fail_closed:
                raise RequestRejected(errors.STORE_UNAVAILABLE, detail=str(error)) from None
            record["outcome"] = "dedup_unavailable"
            record["level"] = "warning"
            record["detail"] = str(error)
            return None
        if claim.state == DONE:
            record["outcome"] = "duplicate"
            record["level"] = "info"
            if fingerprint and claim.done_by == fingerprint:
                record["replay"] = True
            return None
        if claim.state != CLAIMED:
            raise RequestRejected(errors.EVENT_IN_FLIGHT, outcome="in_flight")
        return claim

    def _complete(
        self, key: str, claim: "Optional[Claim]", fingerprint: str, record: "Dict[str, Any]", deadline: Deadline
    ) -> None:
        """Mark the event done, trying again while time allows: a lost completion leaves only the
        in-flight lease (longer than the timestamp tolerance) between the event and a re-run.

        The handler has run, so completing matters more than the reply's latency: it gets at
        least one store timeout even when the request's budget is spent.
        """
        if claim is None:
            return
        completion = Deadline(max(deadline.remaining(), self._store_timeout_s))
        for _attempt in range(3):
            try:
                self._store.complete(key, self._settings.dedup_retention_s, fingerprint, deadline=completion)
                return
            except StoreUnavailable as error:
                record["store_warning"] = "complete failed: " + str(error)
                record["level"] = "error"
            if not completion.remaining():
                return

    def _release(self, key: str, claim: "Optional[Claim]", record: "Dict[str, Any]") -> None:
        """Give the claim up so a redelivery runs again; bounded on its own (a spent budget is
        often why a request fails), and harmless to miss (the lease ends the claim)."""
        if claim is None:
            return
        try:
            self._store.release(key, claim.token, deadline=Deadline(self._store_timeout_s))
        except StoreUnavailable as error:
            record["store_warning"] = "release failed: " + str(error)

    # -- the worker function -------------------------------------------------------------------

    def run_job(
        self, payload: bytes, request_id: str, context: "Any" = None, max_age_s: "Optional[float]" = None
    ) -> str:
        """Run a sealed job on the worker; raise unless it ran or was done already, so FC's
        asynchronous retry policy and then its on-failure destination apply.

        A job this instance cannot open is raised too: it may be sealed under a key pair this
        instance does not know yet (the callback's and the worker's instances are replaced
        independently during a rotation); a forged one ending in the dead letters is harmless.
        ``max_age_s`` (default: the TTL) lets an operator's re-drive accept an older job.
        Returns the outcome written to the worker's log record.
        """
        started = time.perf_counter()
        record = {"request_id": request_id, "stage": "worker"}  # type: Dict[str, Any]
        try:
            self._run_job(payload, context, record, max_age_s or self._settings.dedup_retention_s)
        except RequestRejected as rejection:
            refuse(rejection, record)
            record["level"] = "error"
            raise
        except Exception:
            logger.exception("worker failed (request %s)", request_id)
            refuse(RequestRejected(errors.INTERNAL_ERROR, outcome="failed"), record)
            raise
        finally:
            record["latency_ms"] = elapsed_ms(started)
            self._records.write(record)
        return record["outcome"]

    def _run_job(self, payload: bytes, context: "Any", record: "Dict[str, Any]", max_age_s: float) -> None:
        job = self._jobs.open(payload, max_age_s=max_age_s)
        record["handoff_request_id"] = bounded_text(job.request_id)
        if job.source != "push":
            record["source"] = bounded_text(job.source)
        event = Event(parse_event(job.plaintext), job.plaintext)
        record["event_type"] = bounded_text(event.type)
        self._describe(event, record)
        store_key = self._key_prefix + event.key
        claim = self._claim_event(
            store_key,
            record,
            "",
            Deadline(self._budget_s),
            token=task_id_for(store_key),
            adopt=True,
            lease_s=self._worker_lease_s(context),
        )
        if record.get("outcome") != "duplicate":
            route = self._router.route(event.type)
            self._run(event, route, store_key, claim, job.fingerprint, record, Deadline(self._budget_s))

    def _worker_lease_s(self, context: "Any") -> float:
        """The worker's claim outlives its run: at least the function's timeout plus a minute."""
        timeout = getattr(getattr(context, "function", None), "timeout", None)
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            return max(self._settings.dedup_in_flight_s, timeout + 60)
        return self._settings.dedup_in_flight_s
