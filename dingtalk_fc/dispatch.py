"""From an event to its handler: run it here under the exactly-once unit, or defer it to the
worker, whichever its route says; and the recorded form of that step for events that did not
arrive as a push (recovery, re-drive)."""

import time

from . import errors, outcome
from .errors import RequestRejected
from .events import bounded_text
from .records import describe, elapsed_ms, log_failure, record_of

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable

    from .defer import Deferral
    from .events import Event
    from .once import Arrival, Once
    from .outcome import Outcome
    from .records import RecordWriter
    from .router import Router


class Dispatcher:
    """Routes events; ``defer_all`` defers every route that does not say otherwise."""

    def __init__(self, router: "Router", once: "Once", deferral: "Deferral", defer_all: bool) -> None:
        self.router = router
        self.once = once
        self.deferral = deferral
        self._defer_all = defer_all

    def dispatch(self, event: "Event", arrival: "Arrival") -> "Outcome":
        """Run or defer ``event``; raises :class:`RequestRejected` with the refusal."""
        route = self.router.route(event.type)
        if route is not None and (route.deferred if route.deferred is not None else self._defer_all):
            return self.deferral.defer(event, route, arrival)
        ticket = self.once.claim(self.once.key(event), arrival)
        return self.once.run(ticket, event, route, arrival)

    def guarded(self, event: "Event", arrival: "Arrival") -> "Outcome":
        """:meth:`dispatch` that never raises: a refusal or a bug is its outcome."""
        try:
            return self.dispatch(event, arrival)
        except RequestRejected as rejection:
            return outcome.refused(rejection)
        except Exception as error:
            log_failure(f"internal error (request {arrival.request_id})", error)
            return outcome.refused(RequestRejected(errors.INTERNAL_ERROR, outcome=outcome.FAILED))


def guarded(step: "Callable[[], Outcome]", request_id: str) -> "Outcome":
    """``step()``'s outcome; a refusal as its outcome, a bug as ``internal error`` (logged)."""
    try:
        return step()
    except RequestRejected as rejection:
        return outcome.refused(rejection)
    except Exception as error:
        log_failure(f"internal error (request {request_id})", error)
        return outcome.refused(RequestRejected(errors.INTERNAL_ERROR, outcome=outcome.FAILED))


def recorded(
    records: "RecordWriter", event: "Event", arrival: "Arrival", step: "Callable[[], Outcome]", **base: "Any"
) -> "Outcome":
    """Run ``step`` for ``event`` (guarded), write its one record, return its outcome: how every
    event that did not arrive as a push (recovery, re-drive) is processed and logged."""
    started = time.perf_counter()
    result = guarded(step, arrival.request_id)
    record = {"request_id": arrival.request_id, "source": arrival.source, "event_type": bounded_text(event.type)}
    record.update(base)
    describe(event, record)
    record_of(result, record)
    record["latency_ms"] = elapsed_ms(started)
    records.write(record)
    return result
