"""Deferred events: sealed as a job and handed to the worker function, which runs them later.

The deferral uses the FC asynchronous task id derived from the event's key (FC refuses a second
task with that id), and the event's claim is held with that same id as its token, so the worker
adopts the claim whatever happened to the request that deferred it. The FC clients that do the
deferral are in :mod:`dingtalk_fc.defer_fc2` (FC 2.0) and :mod:`dingtalk_fc.defer_fc3` (FC 3.0).
"""

import hashlib

from . import errors, outcome
from .deadline import Deadline
from .errors import RequestRejected
from .jobs import MAX_JOB_BYTES
from .once import duplicate, ran
from .records import log_failure

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Optional

    from .events import Event
    from .jobs import JobSealer
    from .once import Arrival, Once, Ticket
    from .outcome import Outcome
    from .router import Route


class DeferralFailed(Exception):
    """The deferred event could not be handed to the worker."""


class Deferrer:
    """Hands a sealed job (no plaintext) to the worker function."""

    def defer(self, task_id: str, payload: bytes, context: "Any", deadline: "Deadline") -> None:
        """Return once FC accepted the invocation or says ``task_id`` exists already; raise
        :class:`DeferralFailed` otherwise, within ``deadline``."""
        raise NotImplementedError


def task_id_for(store_key: str) -> str:
    """FC's asynchronous task id for an event: stable, and made of safe characters. It is also
    the token of a deferred event's claim (see the module's doc)."""
    return "dingtalk-" + hashlib.sha256(store_key.encode("utf-8", "surrogatepass")).hexdigest()[:48]


class Deferral:
    """Claims an event and hands it to the worker through ``deferrer`` (None: no worker), each
    deferral bounded by ``budget_s`` (a push's request budget) wherever it comes from."""

    def __init__(self, once: "Once", jobs: "JobSealer", deferrer: "Optional[Deferrer]", budget_s: float) -> None:
        self._once = once
        self._jobs = jobs
        self._deferrer = deferrer
        self._budget_s = budget_s

    @property
    def has_worker(self) -> bool:
        return self._deferrer is not None

    def defer(self, event: "Event", route: "Route", arrival: "Arrival") -> "Outcome":
        """Claim ``event`` under its task id and defer it (``deferred``); a done event is a
        ``duplicate``. A failed deferral releases the claim and refuses (503, or 413 for a push
        whose job FC would never accept).

        Outside a push (recovery, a re-drive) a job over FC's limit runs here instead, under the
        same claim: DingTalk has deleted the item, FC can never queue it, and nothing holds these
        to a push's 1500 ms.
        """
        key = self._once.key(event)
        job = self._jobs.seal(event.plaintext, arrival.source, arrival.request_id, arrival.fingerprint)
        if len(job) > MAX_JOB_BYTES and arrival.source != "push":
            # under a claim of its own, not the task id's: a queued job of the event must not adopt it
            result = self._once.run(self._once.claim(key, arrival), event, route, arrival)
            detail = f"ran here: its job of {len(job)} bytes is over FC's {MAX_JOB_BYTES}"
            return outcome.Outcome(result.name, result.level, result.problem, detail, result.fields)
        task_id = task_id_for(key)
        ticket = self._once.claim(key, arrival, token=task_id)
        if ticket.done:
            return duplicate(ticket)
        self._send(job, task_id, arrival, ticket)
        return ran(outcome.DEFERRED, ticket, {})

    def requeue(self, event: "Event", arrival: "Arrival") -> "Outcome":
        """Hand an event that failed (or was in flight) outside a push to the worker, whose queue
        holds it, retries it and dead-letters it. No claim is taken: the worker adopts the
        event's claim, finds it done, or finds it in flight and raises, so FC retries it later."""
        job = self._jobs.seal(event.plaintext, arrival.source, arrival.request_id)
        self._send(job, task_id_for(self._once.key(event)), arrival, None)
        return outcome.done(outcome.DEFERRED)

    def _send(self, job: bytes, task_id: str, arrival: "Arrival", ticket: "Optional[Ticket]") -> None:
        """Give ``job`` to the worker; on any failure release ``ticket``'s claim and refuse.

        Releasing is safe even when FC may have queued the job: the claim's token is the task
        id, so the worker adopts a claim a redelivery re-took, and FC refuses the same task id
        twice.
        """
        try:
            if len(job) > MAX_JOB_BYTES:
                raise RequestRejected(errors.JOB_TOO_LARGE, detail=f"job of {len(job)} bytes", outcome=outcome.FAILED)
            if self._deferrer is None:
                raise DeferralFailed("no worker configured")
            # bounded like a push's wherever it comes from: one unanswered call must not spend a recovery run
            bound = Deadline(min(arrival.deadline.remaining(), self._budget_s))
            self._deferrer.defer(task_id, job, arrival.context, bound)
        except RequestRejected:
            self._release(ticket)
            raise
        except Exception as error:
            if not isinstance(error, DeferralFailed):
                log_failure("deferral failed unexpectedly", error)
            self._release(ticket)
            detail = str(error)[:200] if isinstance(error, DeferralFailed) else type(error).__name__
            raise RequestRejected(errors.HANDOFF_FAILED, detail=detail, outcome=outcome.FAILED) from None

    def _release(self, ticket: "Optional[Ticket]") -> None:
        if ticket is not None:
            self._once.release(ticket)
