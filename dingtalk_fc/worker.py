"""The worker function: runs a sealed job deferred by the callback, recovery or a re-drive.

It raises unless the event ran or was done already, so FC's asynchronous retry policy and then
its on-failure destination (the dead letters) apply. A job this instance cannot open is raised
too: it may be sealed under a key pair this instance does not know yet (the callback's and the
worker's instances are replaced independently during a rotation); a forged one ending in the dead
letters is harmless.
"""

import time

from . import errors, outcome
from .context import function_timeout_of
from .deadline import Deadline
from .defer import task_id_for
from .errors import RequestRejected
from .events import Event, bounded_text
from .once import Arrival
from .records import describe, elapsed_ms, log_failure, record_of
from .wire import parse_event

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, Optional

    from .jobs import JobSealer
    from .once import Once
    from .outcome import Outcome
    from .records import RecordWriter
    from .router import Router


STAGE = "worker"


class Worker:
    """Opens jobs with ``jobs``, adopts their claims in ``once`` and runs ``router``'s handlers."""

    def __init__(
        self, jobs: "JobSealer", once: "Once", router: "Router", records: "RecordWriter", budget_s: float
    ) -> None:
        self._jobs = jobs
        self._once = once
        self._router = router
        self._records = records
        self._budget_s = budget_s

    def run(
        self, payload: bytes, request_id: str, context: "Any" = None, max_age_s: "Optional[float]" = None
    ) -> "Outcome":
        """Run one job; its outcome (handled, unhandled, duplicate, dedup_unavailable), or raise.

        ``max_age_s`` (default: the de-duplication TTL) lets an operator's re-drive accept an older
        job. What it raises is a :class:`RequestRejected` (a failed handler's carries its ``cause``).
        """
        started = time.perf_counter()
        record: Dict[str, Any] = {"request_id": request_id, "stage": STAGE}
        try:
            result = self._run(payload, request_id, context, record, max_age_s or self._once.ttl_s)
        except RequestRejected as rejection:
            result = outcome.refused(rejection).as_error()
            self._write(record, result, started)
            raise
        except Exception as error:
            log_failure(f"worker failed (request {request_id})", error)
            result = outcome.refused(RequestRejected(errors.INTERNAL_ERROR, outcome=outcome.FAILED))
            self._write(record, result, started)
            raise
        self._write(record, result, started)
        return result

    def _run(
        self, payload: bytes, request_id: str, context: "Any", record: "Dict[str, Any]", max_age_s: float
    ) -> "Outcome":
        job = self._jobs.open(payload, max_age_s=max_age_s)
        record["deferred_by"] = bounded_text(job.request_id)
        if job.source != "push":
            record["source"] = bounded_text(job.source)
        event = Event(parse_event(job.plaintext), job.plaintext)
        record["event_type"] = bounded_text(event.type)
        describe(event, record)
        arrival = Arrival(job.source, request_id, job.fingerprint, context, Deadline(self._budget_s))
        key = self._once.key(event)
        ticket = self._once.claim(key, arrival, token=task_id_for(key), adopt=True, lease_s=self._lease_s(context))
        # the claim's own budget is spent: running and completing get a fresh one
        arrival = arrival.with_deadline(Deadline(self._budget_s))
        return self._once.run(ticket, event, self._router.route(event.type), arrival)

    def _lease_s(self, context: "Any") -> float:
        """The worker's claim outlives its run: at least the function's timeout plus a minute."""
        timeout = function_timeout_of(context)
        return max(self._once.in_flight_s, timeout + 60) if timeout else self._once.in_flight_s

    def _write(self, record: "Dict[str, Any]", result: "Outcome", started: float) -> None:
        record_of(result, record)
        record["latency_ms"] = elapsed_ms(started)
        self._records.write(record)
