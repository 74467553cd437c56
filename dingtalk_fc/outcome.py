"""What became of one event or one request, returned by every step to its caller.

Steps return an :class:`Outcome` rather than writing into a shared log record: the caller decides
what happens next from it (a duplicate is not run, a failure is retried on the worker), and the
record is built from it once, at the end (:func:`dingtalk_fc.records.record_of`).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, Optional

    from .errors import Problem, RequestRejected

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


class Outcome:
    """``name`` (one of the constants above), ``level`` (info, warning, error), ``problem``
    (the :class:`~dingtalk_fc.errors.Problem` of a refusal, else None), ``detail`` (a safe reason
    for the log, never event data) and ``fields`` (extra record fields: what a handler returned,
    ``replay``, ``store_warning``, ``handler_warning``, ``error_type``). Not to be changed once
    made (slots rather than a namedtuple: cheaper to define at cold start)."""

    __slots__ = ("detail", "fields", "level", "name", "problem")

    def __init__(
        self, name: str, level: str, problem: "Optional[Problem]", detail: str, fields: "Dict[str, Any]"
    ) -> None:
        self.name = name
        self.level = level
        self.problem = problem
        self.detail = detail
        self.fields = fields

    def __repr__(self) -> str:
        return f"Outcome({self.name!r}, {self.level!r}, {self.problem!r}, {self.detail!r})"

    @property
    def acknowledged(self) -> bool:
        """Whether DingTalk may be answered ``success``: the event ran, will run or ran before."""
        return self.problem is None and self.name in ACKNOWLEDGED

    def as_error(self, detail: "Optional[str]" = None) -> "Outcome":
        """The same outcome logged as an error (with another ``detail``, if given)."""
        return Outcome(self.name, "error", self.problem, self.detail if detail is None else detail, self.fields)


def done(name: str, level: str = "info", detail: str = "", **fields: "Any") -> Outcome:
    """An event that ran, will run, or ran before."""
    return Outcome(name, level, None, detail, fields)


def refused(rejection: "RequestRejected", **fields: "Any") -> Outcome:
    """A request or an event refused with ``rejection``'s problem: an error at 5xx, else a warning."""
    problem = rejection.problem
    level = "error" if problem.status >= 500 else "warning"
    fields.update(getattr(rejection, "fields", ()))  # what a failed handler's refusal adds
    return Outcome(rejection.outcome, level, problem, rejection.detail, fields)
