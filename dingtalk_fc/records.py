"""One JSON line per delivery on stdout, which FC ships to the function's Logstore.

Written straight to stdout rather than through ``logging``: the runtime's root logger prefixes
its lines, and a bare JSON line is what SLS's ``json_extract`` and field indexes read.
Records are ASCII (a lone surrogate or a C locale cannot make the write fail), at most
:data:`MAX_RECORD_CHARS` long but for a sealed job they carry, and writing one never raises: by
then the event may have run.
"""

import json
import logging
import sys
import time
from collections.abc import Mapping

from .events import IDENTIFIER_FIELDS, MAX_TEXT_CHARS

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import IO, Any, Dict, List, Optional

    from .events import Event
    from .outcome import Outcome

logger = logging.getLogger("dingtalk_fc")

MAX_RECORD_CHARS = 8192
MAX_RETURNED_CHARS = 256
# The record's own fields: what a handler returns never overwrites them.
RESERVED_FIELDS = frozenset(
    (
        "outcome",
        "event_type",
        "event_id",
        "corp_id",
        "status",
        "level",
        "request_id",
        "latency_ms",
        "errcode",
        "errmsg",
        "detail",
        "stage",
        "source",
        "replay",
        "deferred_by",
        "store_warning",
        "handler_warning",
        "truncated",
        "error_type",
        "sync_item",
        "items",
        *(field for field, _spellings in IDENTIFIER_FIELDS),
    )
)
# What a record keeps when its full form is over the size limit: a sealed ``job`` (a dead letter,
# a recovery journal line) is what re-drives the event, so it is kept whole (MAX_SEALED_TEXT_BYTES),
# as is the ``sealed_item`` of an item recovery rejected (bounded by MAX_SEALED_TEXT_BYTES), and
# what a dead letter is grouped by (the deferral, FC's condition, attempts, the worker's request).
ESSENTIAL_FIELDS = (
    *("sync_item", "errmsg", "error_type", "corp_id", "store_warning", "latency_ms"),
    *("request_id", "stage", "source", "event_type", "event_id", "outcome", "status", "level"),
    *("errcode", "detail", "job", "sealed_item"),
    *("deferred_by", "condition", "attempts", "worker_request_id"),
)

_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)


def returned_fields(returned: "Any", event_type: str) -> "Dict[str, Any]":
    """A handler's returned fields as its record keeps them: a mapping's non-reserved keys,
    anything else ignored with a ``handler_warning`` (the handler has run: this never fails the
    delivery)."""
    if returned is None:
        return {}
    if not isinstance(returned, Mapping):
        return _warned({}, f"returned {type(returned).__name__}, not a mapping: ignored", event_type)
    fields: Dict[str, Any] = {}
    ignored: List[str] = []
    unencodable: List[str] = []
    for key, value in returned.items():
        if not isinstance(key, str) or key in RESERVED_FIELDS:
            ignored.append(str(key)[:40])
            continue
        try:
            fields[key[:64]] = _bounded_value(value)
        except (TypeError, ValueError, RecursionError):  # a tuple key, a cycle: the record must still be written
            unencodable.append(key[:40])
    if ignored:
        _warned(fields, "reserved fields ignored: " + ", ".join(sorted(ignored)[:10]), event_type)
    if unencodable:
        _warned(fields, "fields not JSON, ignored: " + ", ".join(sorted(unencodable)[:10]), event_type)
    return fields


def log_failure(message: str, error: BaseException) -> None:
    """Log a failure with its type and where it happened, never its message: an exception's text
    may quote event data (``int('<a field>')``), and stderr goes to the Logstore too."""
    import traceback  # at a failure only: kept off the cold start

    frames = "".join(traceback.format_tb(error.__traceback__)).rstrip()
    logger.error("%s: %s\nTraceback (most recent call last):\n%s", message, type(error).__name__, frames)


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``perf_counter`` reading), to the microsecond, for a
    record's ``latency_ms``. Integer division rather than ``round(x, 3)``, which costs more than
    the rest of the record."""
    return int((time.perf_counter() - started) * 1000000) / 1000


def describe(event: "Event", record: "Dict[str, Any]") -> None:
    """What a record says of its event beyond its type: corp, idempotency key and identifiers
    (never free text such as titles, never the plaintext)."""
    corp_id = event.corp_id
    record["corp_id"] = corp_id[:MAX_TEXT_CHARS] if corp_id else corp_id  # bounded_text, inlined (hot path)
    record["event_id"] = event.key[:MAX_TEXT_CHARS]
    record.update(event.identifiers)


def record_of(outcome: "Outcome", base: "Dict[str, Any]") -> "Dict[str, Any]":
    """The one log record of an event or a request: ``base`` (who and what: request id, source,
    the event's identifiers) completed from its ``outcome``. ``base`` is the record: it is
    filled in, not copied (records are built once per delivery, on the hot path)."""
    base["outcome"] = outcome.name
    problem = outcome.problem
    if problem is not None:
        base["errcode"] = problem.errcode
        base["errmsg"] = problem.errmsg
    if outcome.detail:
        base["detail"] = outcome.detail
    base["level"] = outcome.level
    if outcome.fields:
        base.update(outcome.fields)
    return base


def _bounded_value(value: "Any") -> "Any":
    """A returned value as the record keeps it: scalars as they are (strings cut), anything else
    as its JSON text when that is too long. Scalars skip the encoder, the common case: encoding
    a number to measure it took 0.86 µs here, this 0.11 µs."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:MAX_RETURNED_CHARS]
    text = _ENCODER.encode(value)
    return value if len(text) <= MAX_RETURNED_CHARS else text[:MAX_RETURNED_CHARS]


def _warned(fields: "Dict[str, Any]", warning: str, event_type: str) -> "Dict[str, Any]":
    fields["handler_warning"] = warning
    logger.warning("handler for %s %s", str(event_type)[:64], warning)
    return fields


class RecordWriter:
    """Writes records as single JSON lines; ``stream`` defaults to the current ``sys.stdout``."""

    def __init__(self, stream: "Optional[IO[str]]" = None) -> None:
        self._stream = stream

    def write(self, record: "Mapping[str, Any]") -> None:
        try:
            line = _ENCODER.encode(record)
            if len(line) > MAX_RECORD_CHARS:
                line = _ENCODER.encode(_essentials(record))
            stream = self._stream or sys.stdout
            stream.write(line + "\n")
            stream.flush()
        except Exception as error:  # a broken pipe or a closed stream must not fail the delivery
            logger.error("could not write a log record: %s", type(error).__name__)


def _essentials(record: "Mapping[str, Any]") -> "Dict[str, Any]":
    kept = {name: record[name] for name in ESSENTIAL_FIELDS if name in record}  # each bounded already
    kept["truncated"] = True
    return kept
