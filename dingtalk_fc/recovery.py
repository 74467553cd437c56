"""One recovery run: pull DingTalk's failed-push list and run each event through the dispatcher.

The list may be cleared as it is read, so a pulled page is made durable before anything runs:
each event is sealed (encrypted, as a worker job) into a ``"stage": "pulled"`` journal line on
stdout, which FC ships to the Logstore, and ``python -m dingtalk_fc_dev redrive`` can run it
again from an export of those lines. Then every event goes through
:func:`process` (the dispatcher: de-duplication, the handler or the deferral to the worker) and
gets its own record; one summary record closes the run.

A page is pulled only while the time budget leaves room to run it, so a run that stops for
time stops between pages, and the next run continues from DingTalk's list.
"""

import functools
import json
import logging
import time
import weakref

from . import dingtalk_api, errors, outcome
from .config import MIN_BUDGET_S, ConfigError, RecoverySettings, load_recovery_settings
from .context import function_timeout_of, platform_of
from .deadline import Deadline
from .dispatch import recorded
from .errors import RequestRejected
from .failed_items import event_from_item
from .jobs import MAX_SEALED_TEXT_BYTES, REJECTED_ITEM
from .once import Arrival
from .records import elapsed_ms

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

    from .events import Event
    from .outcome import Outcome
    from .records import RecordWriter
    from .runtime import App, Runtime

logger = logging.getLogger("dingtalk_fc")

SOURCE = "recovery"
# Kept free below the function's own timeout, for the last page's events and the summary.
TIMEOUT_MARGIN_S = 20
# Time held back for running a page before the first page has shown how long one takes.
MIN_PAGE_RESERVE_S = 5.0
OUTCOME_COUNTERS = {
    "handled": "handled",
    "unhandled": "handled",
    "deferred": "deferred",
    "duplicate": "duplicates",
    "in_flight": "in_flight",
    "dedup_unavailable": "handled",  # the store was down, the handler ran (failing open)
}  # anything else (failed, a store refusal) counts as failed


def api_for(settings: RecoverySettings) -> dingtalk_api.DingTalkApi:
    return dingtalk_api.DingTalkApi(
        settings.app_key,
        settings.app_secret,
        settings.generation,
        settings.api_base,
        settings.oapi_base,
        timeout_s=settings.api_timeout_s,
    )


def budget_for(settings: RecoverySettings, context: "Any") -> float:
    """The configured budget, cut to leave ``TIMEOUT_MARGIN_S`` of the function's timeout;
    :class:`ConfigError` for a timeout that leaves less than ``MIN_BUDGET_S``."""
    timeout = function_timeout_of(context)
    if timeout:
        if timeout - TIMEOUT_MARGIN_S < MIN_BUDGET_S:
            raise ConfigError(
                "the recover function's timeout",
                f"must be at least {MIN_BUDGET_S + TIMEOUT_MARGIN_S} s ({timeout:g} s never pulls a page)",
            )
        return float(min(settings.budget_s, timeout - TIMEOUT_MARGIN_S))
    return float(settings.budget_s)


def process(app: "App", event: "Event", arrival: Arrival, in_flight_s: float) -> "Outcome":
    """Run or defer one recovered (or re-driven) event through the dispatcher, with its record.

    Without a worker nobody will offer the event again, so one in flight elsewhere is an error to
    re-drive, not a warning: the holder may be dead.
    """
    retried = app.dispatcher.deferral.has_worker

    def step() -> "Outcome":
        try:
            return app.dispatcher.dispatch(event, arrival)
        except RequestRejected as rejection:
            if retried or rejection.outcome != outcome.IN_FLIGHT:
                raise
            detail = (
                f"in flight elsewhere and not retried: redrive it from the journal once the in-flight "
                f"lease ({int(in_flight_s)} s) has passed, if it did not complete"
            )
            return outcome.refused(rejection).as_error(detail)

    return recorded(app.records, event, arrival, step)


class Recovery:
    """Runs recoveries for one function instance (the API client keeps its token between runs)."""

    def __init__(
        self,
        app: "App",
        api: dingtalk_api.DingTalkApi,
        settings: RecoverySettings,
        records: "RecordWriter",
        max_item_bytes: int,
        clock: "Callable[[], float]" = time.monotonic,
    ) -> None:
        self._app = app
        self._api = api
        self._settings = settings
        self._records = records
        self._max_item_bytes = max_item_bytes
        self._clock = clock

    def run(self, request_id: str, context: "Any", budget_s: "Optional[float]" = None) -> "Dict[str, Any]":
        """One run; returns (and logs) the summary record, which also says why the run stopped
        (``stopped``: drained, budget, max_pages, throttled, unavailable, credentials_rejected,
        token_expired, refused). Never raises for DingTalk's failures."""
        started = time.perf_counter()
        budget = budget_s if budget_s is not None else budget_for(self._settings, context)
        deadline = Deadline(budget, self._clock)
        summary: Dict[str, Any] = {
            "request_id": request_id,
            "source": SOURCE,
            "stage": "summary",
            "api": self._settings.generation,
            "pulled": 0,
            "handled": 0,
            "deferred": 0,
            "duplicates": 0,
            "in_flight": 0,
            "retried_on_worker": 0,
            "failed": 0,
            "rejected": 0,
            "not_run": 0,
            "pages": 0,
            "budget_s": budget,
        }
        stopped = self._pages(deadline, request_id, context, summary)
        summary["stopped"] = stopped
        summary["token_requests"] = self._api.token_requests
        unrun = summary["failed"] or summary["not_run"] or summary["rejected"]  # each needs a redrive
        summary["level"] = "error" if unrun or stopped in _ERRORS else "info"
        if stopped in _WARNINGS and summary["level"] == "info":
            summary["level"] = "warning"
        summary["elapsed_ms"] = elapsed_ms(started)
        self._records.write(summary)
        return summary

    def _pages(self, deadline: Deadline, request_id: str, context: "Any", summary: "Dict[str, Any]") -> str:
        """Pull and run pages; returns why it stopped.

        A list that deletes what it returns drains page by page. A page that brings nothing new
        while more is said to remain shows a list that keeps what it returns (nothing documents
        either way): the legacy list then stops (``not_consumed``); v1 is paged by time instead,
        ``beginTime``/``endTime`` over the last ``lookback_s``, a window split in halves while it
        holds more than a page. Events already pulled in this run are never run again.
        """
        page_cost = MIN_PAGE_RESERVE_S
        seen: Set[str] = set()
        windows: List[Tuple[int, int]] = []  # v1 time windows still to pull, last first
        while summary["pages"] < self._settings.max_pages:
            room = deadline.remaining() - page_cost
            if room < min(1.0, self._settings.api_timeout_s):  # no time to pull a page and run it
                return "budget"
            window = windows[-1] if windows else None
            try:
                page = self._api.failed_page(timeout_s=room, window=window)
            except dingtalk_api.ApiError as error:  # told once, in the summary: no retry storm
                summary["detail"] = str(error)
                summary["api_status"] = error.status
                summary["api_code"] = error.code
                return error.kind
            summary["pages"] += 1
            summary["pulled"] += len(page.items)
            page_started = self._clock()
            fresh = self._run_page(page.items, deadline, request_id, context, summary, seen)
            page_cost = max(MIN_PAGE_RESERVE_S, 1.5 * (self._clock() - page_started))
            if not page.more:
                if windows:
                    windows.pop()
                if not windows:
                    return "drained"
            elif not fresh:  # the list keeps what it returns
                split = self._split(window, summary)
                if split is None:
                    return "not_consumed"
                if window is not None:
                    windows.pop()
                windows.extend(split)
        return "max_pages"

    def _split(
        self, window: "Optional[Tuple[int, int]]", summary: "Dict[str, Any]"
    ) -> "Optional[List[Tuple[int, int]]]":
        """The windows to pull instead of ``window`` (later half first on the stack), or None
        when the list cannot be paged further, said in the summary."""
        summary["list_not_consumed"] = True
        if self._settings.generation != dingtalk_api.V1:
            summary["detail"] = "the failed list returned the same items again and says more remain: stopped"
            return None
        if window is None:
            end = int(time.time() * 1000)
            summary["window_ms"] = [end - self._settings.lookback_s * 1000, end]
            return [(end - self._settings.lookback_s * 1000, end)]
        begin, end = window
        if end - begin < 2:
            summary["detail"] = f"more than a page of events within 1 ms at {begin}: stopped"
            return None
        summary["windows_split"] = summary.get("windows_split", 0) + 1
        middle = (begin + end) // 2
        return [(middle, end), (begin, middle)]

    def _run_page(
        self,
        items: "List[Any]",
        deadline: Deadline,
        request_id: str,
        context: "Any",
        summary: "Dict[str, Any]",
        seen: "Optional[Set[str]]" = None,
    ) -> int:
        """Journal then run a page's events; returns how many were not pulled before in this run
        (those in ``seen`` are counted as ``repeated`` and neither journaled nor run again)."""
        events = []
        seen = set() if seen is None else seen
        repeated = 0
        for item in items:  # every event journaled before the first one runs
            try:
                event = event_from_item(item, self._max_item_bytes)
                if event.key in seen:
                    repeated += 1
                    continue
                seen.add(event.key)
                job = self._app.jobs.seal(event.plaintext, SOURCE, request_id)
            except Exception as error:  # one item must never cost the rest of the page
                rejection = error if isinstance(error, RequestRejected) else None
                self._rejected(
                    rejection or RequestRejected(errors.INTERNAL_ERROR, detail=type(error).__name__), item, request_id
                )
                summary["rejected"] += 1
                continue
            self._records.write(
                {
                    "request_id": request_id,
                    "source": SOURCE,
                    "stage": "pulled",
                    "event_type": event.type,
                    "event_id": event.key,
                    "job": job.decode("ascii"),
                }
            )
            events.append(event)
        if repeated:
            summary["repeated"] = summary.get("repeated", 0) + repeated
        arrival = Arrival(SOURCE, request_id, "", context, deadline)
        deferral = self._app.dispatcher.deferral
        for position, event in enumerate(events):
            if deadline.remaining() <= 0:
                self._not_run(events[position:], request_id, summary)
                return len(events)
            has_worker = deferral.has_worker
            result = process(self._app, event, arrival, self._app.settings.dedup_in_flight_s)
            counter = OUTCOME_COUNTERS.get(result.name, "failed")
            if counter in ("failed", "in_flight") and has_worker:
                # the worker's queue holds it, retries it and dead-letters it: nothing to re-drive by hand
                requeue = functools.partial(deferral.requeue, event, arrival)
                retry = recorded(self._app.records, event, arrival, requeue, stage="retry")
                counter = "retried_on_worker" if retry.name == outcome.DEFERRED else counter
            elif counter == "in_flight":  # nobody will run it: the journal line is all there is
                counter = "failed"
            summary[counter] += 1
        return len(events)

    def _rejected(self, rejection: RequestRejected, item: "Any", request_id: str) -> None:
        """An error, for the alert: DingTalk deleted the item and nothing ran it."""
        problem = rejection.problem
        record: Dict[str, Any] = {
            "request_id": request_id,
            "source": SOURCE,
            "outcome": "rejected",
            "level": "error",
            "errcode": problem.errcode,
            "errmsg": problem.errmsg,
            "detail": rejection.detail,
        }
        tag = item.get("callBackTag", item.get("call_back_tag")) if isinstance(item, dict) else None
        if isinstance(tag, str):
            record["event_type"] = tag[:64]
        record.update(kept_item(self._app, item, request_id))
        self._records.write(record)

    def _not_run(self, events: "List[Any]", request_id: str, summary: "Dict[str, Any]") -> None:
        """Pulled, journaled, but the budget ran out: say so per event, for the alert and redrive."""
        for event in events:
            self._records.write(
                {
                    "request_id": request_id,
                    "source": SOURCE,
                    "event_type": event.type,
                    "event_id": event.key,
                    "outcome": "failed",
                    "level": "error",
                    "detail": "time budget spent before it ran: redrive it from the journal",
                }
            )
        summary["not_run"] += len(events)


def kept_item(app: "App", item: "Any", request_id: str) -> "Dict[str, Any]":
    """A rejected item, sealed (encrypted and authenticated) for its record: DingTalk deleted it,
    and ``redrive`` parses it again once the limit or the parser is fixed. Never raises."""
    try:
        sealed = app.jobs.seal(json.dumps(item, ensure_ascii=True), SOURCE, request_id, purpose=REJECTED_ITEM)
    except Exception as error:  # a record without the item beats no record
        return {"item_not_kept": type(error).__name__}
    if len(sealed) > MAX_SEALED_TEXT_BYTES:
        return {"item_not_kept": f"sealed item of {len(sealed)} bytes, over {MAX_SEALED_TEXT_BYTES}"}
    return {"sealed_item": sealed.decode("ascii")}


# Why a run stopped, and how loud that is.
_ERRORS = ("credentials_rejected", "token_expired", "refused", "not_consumed")
_WARNINGS = ("throttled", "unavailable", "budget", "max_pages")


_instances: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def recover(runtime: "Runtime", request_id: str, context: "Any") -> "Dict[str, Any]":
    """``index.recover``: one run with this instance's function; the API client (and its token)
    is kept for the instance's next runs. A configuration error is one error record naming the
    variable, and no exception: FC would retry a failed timer invocation on top of the next."""
    recovery = _instances.get(runtime)
    if recovery is None:
        try:
            app = runtime.load(platform_of(context))
            settings = load_recovery_settings(runtime.environ)
        except ConfigError as error:
            return _summary_error(runtime, request_id, "misconfigured", errors.MISCONFIGURED, str(error))
        recovery = Recovery(app, api_for(settings), settings, runtime.records, app.settings.max_body_bytes)
        _instances[runtime] = recovery
    try:
        return recovery.run(request_id, context)
    except ConfigError as error:  # the function's timeout leaves no room for a page
        return _summary_error(runtime, request_id, "misconfigured", errors.MISCONFIGURED, str(error))
    except Exception as error:  # a bug: one error record, and no retry of the timer run on top of the next
        logger.error("recovery run %s failed: %s", request_id, type(error).__name__)
        return _summary_error(runtime, request_id, "internal_error", errors.INTERNAL_ERROR, type(error).__name__)


def _summary_error(runtime: "Runtime", request_id: str, stopped: str, problem: "Any", detail: str) -> "Dict[str, Any]":
    """The one record of a run that could not start or finish."""
    record = {
        "request_id": request_id,
        "source": SOURCE,
        "stage": "summary",
        "stopped": stopped,
        "level": "error",
        "errcode": problem.errcode,
        "errmsg": problem.errmsg,
        "detail": detail,
    }
    runtime.records.write(record)
    return record
