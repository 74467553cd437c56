"""What became of one event or one request, returned by every step to its caller.

Steps return an :class:`Outcome` rather than writing into a shared log record: the caller decides
what happens next from it (a duplicate is not run, a failure is retried on the worker), and the
record is built from it once, at the end (:func:`dingtalk_fc.records.record_of`).
"""

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Optional

    from .errors import RequestRejected

HANDLED = "handled"
UNHANDLED = "unhandled"
DUPLICATE = "duplicate"
DEFERRED = "deferred"
IN_FLIGHT = "in_flight"
FAILED = "failed"
REJECTED = "rejected"
STORE_DOWN = "dedup_unavailable"  # the store could not answer; the event ran anyway (failing open)
HEALTH = "health"
# Outcomes DingTalk may be told ``success`` for: the event ran, will run, or ran before.
ACKNOWLEDGED = frozenset((HANDLED, UNHANDLED, DUPLICATE, DEFERRED, STORE_DOWN, HEALTH))


class Outcome(namedtuple("Outcome", "name level problem detail fields")):
    """``name`` (one of the constants above), ``level`` (info, warning, error), ``problem``
    (the :class:`~dingtalk_fc.errors.Problem` of a refusal, else None), ``detail`` (a safe reason
    for the log, never event data) and ``fields`` (extra record fields: what a handler returned,
    ``replay``, ``store_warning``, ``handler_warning``, ``error_type``)."""

    __slots__ = ()

    @property
    def acknowledged(self) -> bool:
        """Whether DingTalk may be answered ``success``: the event ran, will run or ran before."""
        return self.problem is None and self.name in ACKNOWLEDGED

    def with_fields(self, **fields: "Any") -> "Outcome":
        merged = dict(self.fields)
        merged.update(fields)
        return self._replace(fields=merged)


def done(name: str, level: str = "info", detail: str = "", **fields: "Any") -> Outcome:
    """An event that ran, will run, or ran before."""
    return Outcome(name, level, None, detail, fields)


def refused(rejection: "RequestRejected", **fields: "Any") -> Outcome:
    """A request or an event refused with ``rejection``'s problem: an error at 5xx, else a warning."""
    problem = rejection.problem
    level = "error" if problem.status >= 500 else "warning"
    fields.update(getattr(rejection, "fields", ()))  # what a failed handler's refusal adds
    return Outcome(rejection.outcome, level, problem, rejection.detail, fields)


def worst(outcomes: "Any") -> "Optional[Outcome]":
    """The first outcome DingTalk must not be told ``success`` for, if any (a delivery that carries
    several events is answered for all of them: one failure makes DingTalk send it again, and the
    events that ran are then duplicates)."""
    for outcome in outcomes:
        if not outcome.acknowledged:
            return outcome
    return None
