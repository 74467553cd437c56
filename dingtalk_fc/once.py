"""The exactly-once unit: claim an event's key, run its handler, then mark it done or give the
claim back, failing open or closed when the store cannot answer.

Every way in (a push, recovery, a re-drive, the worker) goes through :meth:`Once.claim` and
:meth:`Once.run`; only the deferral to the worker (:mod:`dingtalk_fc.defer`) holds a claim it does
not run under, and releases it with :meth:`Once.release` when the deferral fails.
"""

from . import errors, outcome
from .deadline import Deadline
from .dedup import CLAIMED, DONE, StoreFull, StoreUnavailable
from .errors import RequestRejected
from .events import bounded_text
from .records import log_failure, returned_fields

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, Optional

    from .events import Event
    from .outcome import Outcome
    from .router import Route


class Arrival:
    """How one event arrived: ``source`` (push, recovery, redrive), the ``request_id`` that
    brought it, its ``fingerprint`` (the signature of the push that carried it, "" otherwise),
    the platform's invocation ``context`` (for the deferral's credentials; may be None) and the
    :class:`~dingtalk_fc.deadline.Deadline` of every call made for it.

    A class with slots rather than a namedtuple: building a namedtuple class costs about 0.1 ms
    of cold start, and these are made on every request.
    """

    __slots__ = ("context", "deadline", "fingerprint", "request_id", "source")

    def __init__(self, source: str, request_id: str, fingerprint: str, context: "Any", deadline: Deadline) -> None:
        self.source = source
        self.request_id = request_id
        self.fingerprint = fingerprint
        self.context = context
        self.deadline = deadline

    def with_deadline(self, deadline: Deadline) -> "Arrival":
        return Arrival(self.source, self.request_id, self.fingerprint, self.context, deadline)


class Ticket:
    """What claiming a key gave: ``token`` of the claim held ("" when the store could not answer
    and the event runs anyway, failing open: ``warning`` says why), or ``done`` (it ran before;
    ``replay`` when the very request that completed it came again)."""

    __slots__ = ("done", "key", "replay", "token", "warning")

    def __init__(self, key: str, token: str, done: bool = False, replay: bool = False, warning: str = "") -> None:
        self.key = key
        self.token = token
        self.done = done
        self.replay = replay
        self.warning = warning


class Once:
    """Claims, completes and releases event keys in ``store`` (see :mod:`dingtalk_fc.dedup`)."""

    def __init__(
        self,
        store: "Any",
        key_prefix: str,
        in_flight_s: float,
        ttl_s: float,
        fail_closed: bool,
        store_timeout_s: float,
    ) -> None:
        self.store = store
        self._prefix = key_prefix
        self.in_flight_s = in_flight_s
        self.ttl_s = ttl_s
        self._fail_closed = fail_closed
        self._store_timeout_s = store_timeout_s

    def key(self, event: "Event") -> str:
        """The store key of ``event``: its idempotency key under this app's owner key."""
        return self._prefix + event.key

    def claim(
        self,
        key: str,
        arrival: Arrival,
        token: "Optional[str]" = None,
        adopt: bool = False,
        lease_s: "Optional[float]" = None,
    ) -> Ticket:
        """Claim ``key`` to run its event, held with ``token`` (else a fresh one).

        ``adopt``: take over the claim a deferral left under ``token`` (the worker does). Raises
        :class:`RequestRejected`: 409 while another run holds it (so it stays retryable), 503
        when the store is full or down and failing closed, or when the request has no time left
        to ask it (an event is never run unclaimed for want of time: only for want of a store).
        """
        if not arrival.deadline.remaining():  # spent before asking (a SyncHTTP batch's earlier items)
            raise RequestRejected(errors.BUDGET_SPENT)
        try:
            claim = self.store.claim(key, lease_s or self.in_flight_s, token, adopt=adopt, deadline=arrival.deadline)
        except StoreFull as error:
            raise RequestRejected(errors.STORE_FULL, detail=str(error)) from None
        except StoreUnavailable as error:
            if self._fail_closed:
                raise RequestRejected(errors.STORE_UNAVAILABLE, detail=str(error)) from None
            return Ticket(key, "", warning=str(error))
        if claim.state == DONE:
            replay = bool(arrival.fingerprint) and claim.done_by == arrival.fingerprint
            return Ticket(key, "", done=True, replay=replay)
        if claim.state != CLAIMED:
            raise RequestRejected(errors.EVENT_IN_FLIGHT, outcome=outcome.IN_FLIGHT)
        return Ticket(key, claim.token)

    def run(self, ticket: Ticket, event: "Event", route: "Optional[Route]", arrival: Arrival) -> "Outcome":
        """Run ``route``'s handler under ``ticket``; mark the event done, or release the claim and
        refuse (500) when the handler raises. A done ticket runs nothing (``duplicate``)."""
        if ticket.done:
            return duplicate(ticket)
        try:
            returned = route.handler(event) if route is not None else None
            if hasattr(returned, "__await__"):  # an async def: called, its body never ran
                getattr(returned, "close", lambda: None)()  # no "never awaited" warning
                raise TypeError("the handler returned a coroutine: handlers must be plain functions")
        except KeyboardInterrupt:
            self.release(ticket)
            raise
        except BaseException as error:  # SystemExit, a cancellation: a failure like any other
            log_failure(f"handler for {bounded_text(event.type)} failed (event {bounded_text(event.key)})", error)
            release_warning = self.release(ticket)
            raise HandlerFailed(error, release_warning) from None
        # the handler ran: from here on nothing may turn this delivery into a failure
        complete_warning = self.complete(ticket, arrival)
        fields = returned_fields(returned, event.type) if returned is not None else {}
        name = outcome.UNHANDLED if route is None or route.catch_all else outcome.HANDLED
        if complete_warning or ticket.warning or "handler_warning" in fields:
            if complete_warning:
                fields["store_warning"] = complete_warning
            return ran(name, ticket, fields, complete_warning)
        return outcome.Outcome(name, "info", None, "", fields)  # the common case, without ran()'s checks

    def complete(self, ticket: Ticket, arrival: Arrival) -> str:
        """Mark the event done, trying again while time allows; "" or why it could not be stored.

        A lost completion leaves only the in-flight lease (longer than the timestamp tolerance)
        between the event and a re-run. The handler has run, so completing matters more than the
        reply's latency: it gets at least one store timeout even when the budget is spent.
        """
        if not ticket.token:
            return ""
        completion = Deadline(max(arrival.deadline.remaining(), self._store_timeout_s))
        warning = ""
        for _attempt in range(3):
            try:
                self.store.complete(ticket.key, self.ttl_s, arrival.fingerprint, deadline=completion)
                return ""
            except StoreUnavailable as error:
                warning = "complete failed: " + str(error)
            if not completion.remaining():
                break
        return warning

    def release(self, ticket: Ticket) -> str:
        """Give the claim up so a redelivery runs again; "" or why it could not be released.

        Bounded on its own (a spent budget is often why a request fails), and harmless to miss
        (the lease ends the claim).
        """
        if not ticket.token:
            return ""
        try:
            self.store.release(ticket.key, ticket.token, deadline=Deadline(self._store_timeout_s))
        except StoreUnavailable as error:
            return "release failed: " + str(error)
        return ""


class HandlerFailed(RequestRejected):
    """The handler raised: 500, the claim released. ``cause`` is what it raised (kept for the
    developer kit's worker runs; only its type reaches the log)."""

    def __init__(self, cause: BaseException, release_warning: str = "") -> None:
        super().__init__(errors.HANDLER_FAILED, outcome=outcome.FAILED)
        self.cause = cause
        self.release_warning = release_warning

    @property
    def fields(self) -> "Dict[str, Any]":
        fields = {"error_type": type(self.cause).__name__[:64]}
        if self.release_warning:
            fields["store_warning"] = self.release_warning
        return fields


def duplicate(ticket: Ticket) -> "Outcome":
    """A done event, acknowledged without running (an exact replay is flagged as such)."""
    return outcome.done(outcome.DUPLICATE, replay=True) if ticket.replay else outcome.done(outcome.DUPLICATE)


def ran(name: str, ticket: Ticket, fields: "Dict[str, Any]", complete_warning: str = "") -> "Outcome":
    """The outcome of an event that ran (or was deferred) under ``ticket``: a store that could
    not answer makes it ``dedup_unavailable`` (a warning), a lost completion an error."""
    if ticket.warning:
        name, level, detail = outcome.STORE_DOWN, "warning", ticket.warning
    else:
        level, detail = "info", ""
    if complete_warning:
        level = "error"
    if fields.get("handler_warning") and level == "info":
        level = "warning"
    return outcome.Outcome(name, level, None, detail, fields)
