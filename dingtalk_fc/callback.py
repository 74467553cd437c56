"""The HTTP function, transport-free: one delivery in, one reply out, one record per event.

Adapters (WSGI for FC 2.0, the event shape of FC 3.0, the local server) turn their request into
a :class:`CallbackRequest` and write back the :class:`CallbackResponse`; nothing here knows
about HTTP servers or FC. The stages are their own modules: :mod:`~dingtalk_fc.wire` opens the
delivery, :mod:`~dingtalk_fc.dispatch` runs or defers each event it carries (under
:mod:`~dingtalk_fc.once`), :mod:`~dingtalk_fc.records` logs what became of it.
"""

import json
import time

from . import __version__, errors, outcome
from .deadline import Deadline
from .errors import RequestRejected
from .events import SYNC_HTTP_TYPES, URL_CHECKS, Event, bounded_text
from .once import Arrival
from .outcome import ACKNOWLEDGED
from .records import describe, elapsed_ms, log_failure, record_of
from .wire import parse_event

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, List, Tuple

    from .dispatch import Dispatcher
    from .errors import Problem
    from .outcome import Outcome
    from .records import RecordWriter
    from .wire import Opened, Wire

    Results = List[Tuple[Dict[str, Any], Outcome]]


PRODUCT_NAME = "dingtalk-fc-callback"
ALLOWED_METHODS = "GET, HEAD, POST"  # the Allow header of a 405
SOURCE = "push"


class CallbackRequest:
    """One delivery as an adapter hands it over: ``method`` (str), ``query`` (the raw query
    string, without "?"), ``body`` (bytes), ``request_id`` (str) and ``context`` (the platform's
    invocation context, for the deferral; may be None). Slots, not a namedtuple (see
    :class:`dingtalk_fc.errors.Problem`)."""

    __slots__ = ("body", "context", "method", "query", "request_id")

    def __init__(self, method: str, query: str, body: bytes, request_id: str, context: "Any") -> None:
        self.method = method
        self.query = query
        self.body = body
        self.request_id = request_id
        self.context = context


class CallbackResponse:
    """What goes back: HTTP ``status`` (int) and ``body`` (bytes, always JSON)."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    @property
    def json(self) -> "Any":
        return json.loads(self.body.decode("utf-8"))


def error_response(problem: "Problem") -> CallbackResponse:
    return CallbackResponse(problem.status, json.dumps(errors.error_body(problem)).encode())


def refusal(records: "RecordWriter", rejection: RequestRejected, request_id: str) -> CallbackResponse:
    """Refuse a request before it reaches a :class:`Callback` (body too large, misconfigured)."""
    response = error_response(rejection.problem)
    record = record_of(outcome.refused(rejection), {"request_id": request_id})
    record["status"] = response.status
    records.write(record)
    return response


def misconfigured(records: "RecordWriter", error: Exception, request_id: str) -> CallbackResponse:
    """The answer of a function whose configuration is invalid: 500, the variable in the log."""
    return refusal(records, RequestRejected(errors.MISCONFIGURED, detail=str(error)), request_id)


# What a health check, and a URL check or a SyncHTTP envelope, become: made once, for the hot path.
HEALTHY = outcome.done(outcome.HEALTH)
HANDLED = outcome.done(outcome.HANDLED)


class Callback:
    """Everything between the bytes DingTalk sent and the bytes it gets back."""

    def __init__(self, wire: "Wire", dispatcher: "Dispatcher", records: "RecordWriter", budget_s: float) -> None:
        self._wire = wire
        self._dispatcher = dispatcher
        self._records = records
        self._budget_s = budget_s
        self._health = json.dumps({"name": PRODUCT_NAME, "version": __version__, "status": "ok"}).encode()

    def handle(self, request: CallbackRequest) -> CallbackResponse:
        """Answer one delivery and write one record per event it carries; never raises."""
        started = time.perf_counter()
        base: Dict[str, Any] = {"request_id": request.request_id}
        try:
            response, results = self._respond(request, base)
        except RequestRejected as rejection:
            response, results = error_response(rejection.problem), [(base, outcome.refused(rejection))]
        except Exception as error:
            log_failure(f"internal error (request {request.request_id})", error)
            internal = RequestRejected(errors.INTERNAL_ERROR, outcome=outcome.FAILED)
            response, results = error_response(internal.problem), [(base, outcome.refused(internal))]
        latency_ms = elapsed_ms(started)
        for record, result in results:
            record_of(result, record)
            record["status"] = response.status
            record["latency_ms"] = latency_ms
            self._records.write(record)
        return response

    def _respond(self, request: CallbackRequest, base: "Dict[str, Any]") -> "Tuple[CallbackResponse, Results]":
        if request.method in ("GET", "HEAD"):
            return CallbackResponse(200, self._health), [(base, HEALTHY)]
        if request.method != "POST":
            raise RequestRejected(errors.METHOD_NOT_ALLOWED, detail=request.method[:16])
        opened = self._wire.open(request.query, request.body)
        data = parse_event(opened.plaintext)
        event_type = data["EventType"]
        base["event_type"] = bounded_text(event_type)
        if event_type in URL_CHECKS:  # answered here, with no I/O; suite URL checks too (events.SUITE_URL_CHECKS)
            return CallbackResponse(200, opened.cipher.reply_body("success")), [(base, HANDLED)]
        deadline = Deadline(self._budget_s)  # every call this delivery makes: the store, the deferral
        arrival = Arrival(SOURCE, request.request_id, opened.fingerprint, request.context, deadline)
        if event_type in SYNC_HTTP_TYPES:
            from .synchttp import item_events  # third-party apps only: off the cold start

            return self._batch(opened, item_events(data), arrival, base)
        event = Event(data, opened.plaintext)
        describe(event, base)
        try:  # Dispatcher.guarded, inlined: one call less per event; anything else is handle()'s
            result = self._dispatcher.dispatch(event, arrival)
        except RequestRejected as rejection:
            result = outcome.refused(rejection)
        if result.problem is not None or result.name not in ACKNOWLEDGED:
            return error_response(result.problem or errors.INTERNAL_ERROR), [(base, result)]
        return CallbackResponse(200, opened.cipher.reply_body("success")), [(base, result)]

    def _batch(
        self, opened: "Opened", items: "List[Any]", arrival: Arrival, base: "Dict[str, Any]"
    ) -> "Tuple[CallbackResponse, Results]":
        """A SyncHTTP delivery: every item runs as its own event with its own record (its
        position in ``sync_item``), and the envelope gets one record of its own (``items``).
        ``success`` only when every item is acknowledged; otherwise the first failure's answer, so
        DingTalk delivers it all again and the items that ran are duplicates then."""
        results: Results = []
        failure = None
        for position, item in enumerate(items):
            record: Dict[str, Any] = {"request_id": arrival.request_id, "sync_item": position}
            if isinstance(item, RequestRejected):  # a malformed item: refused, the others still run
                result = outcome.refused(item)
            else:
                record["event_type"] = bounded_text(item.type)
                describe(item, record)
                result = self._dispatcher.guarded(item, arrival)
            results.append((record, result))
            if failure is None and (result.problem is not None or result.name not in ACKNOWLEDGED):
                failure = result
        base["items"] = len(items)
        if failure is not None:
            results.append((base, failure))
            return error_response(failure.problem or errors.INTERNAL_ERROR), results
        results.append((base, HANDLED))
        return CallbackResponse(200, opened.cipher.reply_body("success")), results
