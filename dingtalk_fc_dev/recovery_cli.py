"""``recover`` and ``redrive``: DingTalk's failed-push list and dead letters, from a terminal.

Both run in this process over ``handlers.py`` (``make run``'s handlers; deferred ones run by the
worker entrypoint before the command goes on, so it reports what they did and never exits under
them), with the DINGTALK_* configuration of the environment (the demo keys when none is set).
Records go to stderr; what the command itself reports goes to stdout.
"""

import argparse
import json
import os
import sys
import uuid
from typing import Any, Callable, Dict, Iterator, List, Set, TextIO, Tuple

from dingtalk_fc import config, dead_letter, errors, failed_items, recovery
from dingtalk_fc.config import ConfigError
from dingtalk_fc.context import FC2
from dingtalk_fc.deadline import Deadline
from dingtalk_fc.defer import DeferralFailed, Deferrer
from dingtalk_fc.dingtalk_api import ApiError
from dingtalk_fc.errors import RequestRejected
from dingtalk_fc.jobs import REJECTED_ITEM
from dingtalk_fc.once import Arrival
from dingtalk_fc.records import RecordWriter
from dingtalk_fc.runtime import Runtime

from .demo import credentials_from
from .testkit import FakeFcContext

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2
REDRIVE_BUDGET_S = 600.0


class RecoveryCliError(Exception):
    """Reported as one line on stderr with exit status 2."""


def _environment() -> Dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if name.startswith("DINGTALK_")}
    environ.update(credentials_from(os.environ))
    return environ


class InlineDeferrer(Deferrer):
    """Runs each deferral's job through the worker entrypoint before ``defer`` returns and keeps
    its outcome (a thread would die with the command, and its outcome would go unreported). A run
    that raised is a failed deferral: nothing here retries it as FC would, so the command must
    count it failed (its journal line re-drives it), never deferred."""

    def __init__(self, run_worker: Callable[[bytes, str, Any], str]) -> None:
        self._run_worker = run_worker
        self._outcomes = []  # type: List[str]

    def defer(self, task_id: str, payload: bytes, context: Any, deadline: Deadline) -> None:
        try:
            outcome = self._run_worker(payload, "local-" + task_id, context)
        except Exception as error:
            self._outcomes.append("failed")
            raise DeferralFailed(f"the worker run here failed: {type(error).__name__}") from None
        self._outcomes.append(outcome)

    def take(self) -> List[str]:
        """The outcomes since the last call."""
        taken, self._outcomes = self._outcomes, []
        return taken


def local_runtime(environ: Dict[str, str], records: RecordWriter) -> Tuple[Runtime, InlineDeferrer]:
    import handlers

    runtime = Runtime(handlers.router, environ=environ, records=records)
    worker = InlineDeferrer(runtime.run_worker)
    runtime.use_deferrer(worker)
    try:
        runtime.load(FC2)  # validates the configuration now
    except ConfigError as error:
        raise RecoveryCliError(f"configuration: {error}") from None
    return runtime, worker


def _recovery_settings(environ: Dict[str, str]) -> config.RecoverySettings:
    try:
        return config.load_recovery_settings(environ)
    except ConfigError as error:
        raise RecoveryCliError(f"configuration: {error}") from None


def cmd_recover(args: argparse.Namespace, out: TextIO) -> int:
    environ = _environment()
    settings = _recovery_settings(environ)
    records = RecordWriter(sys.stderr)
    runtime, worker = local_runtime(environ, records)
    api = recovery.api_for(settings)
    if args.dry_run:
        return _dry_run(runtime, api, settings, out)
    app = runtime.load(FC2)
    run = recovery.Recovery(app, api, settings, records, app.settings.max_body_bytes)
    # the configured budget: this process has no function timeout to fit in
    summary = run.run("cli-" + uuid.uuid4().hex[:12], FakeFcContext(function="recover"), budget_s=settings.budget_s)
    report = {k: v for k, v in summary.items() if k not in ("request_id", "level")}
    ran = worker.take()
    report["deferred_outcomes"] = {outcome: ran.count(outcome) for outcome in sorted(set(ran))}
    print(json.dumps(report), file=out)
    clean = summary["stopped"] in ("drained", "budget", "max_pages") and "failed" not in ran
    lost = summary["failed"] or summary["not_run"] or summary["rejected"]  # each needs a redrive
    return EXIT_OK if clean and not lost else EXIT_FAILED


def _dry_run(runtime: Runtime, api: Any, settings: config.RecoverySettings, out: TextIO) -> int:
    """Print what the list holds, one JSON line per item; runs nothing. DingTalk may delete
    what it returns, so each line carries the event sealed as a job: keep the output, and
    ``redrive`` it to run the events. Lines are ASCII, so no identifier and no stdout encoding
    can stop the page half-written."""
    app = runtime.load(FC2)
    pulled, rejected, status = 0, 0, EXIT_OK
    printed: Set[str] = set()  # a list that keeps what it returns gives the same page again
    for _page in range(settings.max_pages):
        try:
            page = api.failed_page()
        except ApiError as error:
            print(f"error: DingTalk: {error.kind}: {error}", file=sys.stderr)
            status = EXIT_UNUSABLE
            break
        fresh = 0
        for item in page.items:
            line = _dry_run_line(app, item)
            if line.get("event_id") in printed:
                continue
            printed.add(line.get("event_id", ""))
            fresh += 1
            pulled += 1
            rejected += "rejected" in line
            print(json.dumps(line, ensure_ascii=True), file=out, flush=True)
        if page.more and not fresh:
            print("the list returned the same items again: it keeps what it returns; more remain", file=sys.stderr)
        if not page.more or not fresh:
            break
    print(f"{pulled} item(s) in the failed list ({settings.generation} API), {rejected} rejected", file=sys.stderr)
    return status if status or not rejected else EXIT_FAILED


def _dry_run_line(app: Any, item: Any) -> Dict[str, Any]:
    """One item's line: its event sealed as a job, or why it was rejected and the item sealed."""
    try:
        event = failed_items.event_from_item(item, app.settings.max_body_bytes)
        line = {"event_type": event.type, "event_id": event.key, "corp_id": event.corp_id}  # type: Dict[str, Any]
        line.update(event.identifiers)
        line["job"] = app.jobs.seal(event.plaintext, "recovery", "dry-run").decode("ascii")
        return line
    except Exception as error:  # one item must never cost the rest of the page
        rejection = error if isinstance(error, RequestRejected) else RequestRejected(errors.INTERNAL_ERROR)
        line = {"rejected": rejection.problem.errmsg, "detail": rejection.detail or type(error).__name__}
        line.update(recovery.kept_item(app, item, "dry-run"))
        return line


def redrive_entries(lines: Iterator[Any]) -> Iterator[Tuple[int, str, Any]]:
    """``(line number, kind, value)``: kind ``job`` (bytes of a worker job), ``sealed_item`` (bytes
    of an item recovery rejected, sealed) or ``item``. ``lines`` are text, or bytes (UTF-8)."""
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise RecoveryCliError(f"line {number}: not UTF-8") from None
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except RecursionError:
            raise RecoveryCliError(f"line {number}: JSON nested too deeply") from None
        except ValueError:
            raise RecoveryCliError(f"line {number}: not JSON") from None
        if isinstance(entry, dict) and "requestPayload" in entry:  # FC's on-failure document
            entry = dead_letter.dead_letter_record(entry, "redrive")
            if "job" not in entry:
                raise RecoveryCliError(f"line {number}: no worker job in the destination payload")
        # a lone surrogate is kept (and fails authentication) rather than stopping the file here
        if isinstance(entry, dict) and isinstance(entry.get("job"), str):  # dead letter or journal
            yield number, "job", entry["job"].encode("utf-8", "surrogatepass")
        elif isinstance(entry, dict) and isinstance(entry.get("sealed_item"), str):  # a rejected item
            yield number, "sealed_item", entry["sealed_item"].encode("utf-8", "surrogatepass")
        elif isinstance(entry, dict) and "dingtalk_fc_job" in entry:  # a bare job
            yield number, "job", line.strip().encode("utf-8", "surrogatepass")
        elif isinstance(entry, dict) and isinstance(entry.get("failedList", entry.get("failed_list")), list):
            for item in entry.get("failedList", entry.get("failed_list")):  # a captured page
                yield number, "item", item
        else:
            yield number, "item", entry  # a captured item (malformed ones are reported)


def cmd_redrive(args: argparse.Namespace, out: TextIO) -> int:
    environ = _environment()
    runtime, worker = local_runtime(environ, RecordWriter(sys.stderr))
    app = runtime.load(FC2)
    context = FakeFcContext(function="redrive")
    max_age_s = float("inf") if args.accept_expired else None
    with open(args.file, "rb") as source:  # decoded line by line: a bad line is named, not a traceback
        entries = list(redrive_entries(source))
    shown = shown_path(args.file)
    failures = 0
    outcomes = {}  # type: Dict[str, int]
    for number, kind, value in entries:
        request_id = f"redrive-{number}-{uuid.uuid4().hex[:8]}"
        try:
            outcome = _redrive_one(runtime, app, worker, kind, value, request_id, context, max_age_s)
        except RequestRejected as rejection:  # a handler that failed is "failed", a refused entry "rejected"
            outcome = rejection.outcome if rejection.outcome in ("failed", "in_flight") else "rejected"
            detail = f" ({rejection.detail})" if rejection.detail else ""
            print(f"FAIL {shown}:{number}: {rejection.problem.errmsg}{detail}", file=out)
        except Exception as error:  # one entry must never stop the file (or its summary)
            outcome = "failed"
            print(f"FAIL {shown}:{number}: {type(error).__name__}", file=out)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        failures += outcome in ("failed", "rejected", "in_flight")
    runtime_summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
    print(f"redrive: {len(entries)} entries: {runtime_summary or 'nothing'}", file=out)
    return EXIT_FAILED if failures else EXIT_OK


def _redrive_one(
    runtime: Runtime,
    app: Any,
    worker: InlineDeferrer,
    kind: str,
    value: Any,
    request_id: str,
    context: Any,
    max_age_s: Any,
) -> str:
    """Run one entry; its outcome. Raises for a job the worker refused (RequestRejected for an
    item that is not one)."""
    if kind == "job":
        return runtime.run_worker(value, request_id, context, max_age_s=max_age_s)
    if kind == "sealed_item":  # a failed-list item recovery rejected: parsed again now
        item = json.loads(app.jobs.open(value, max_age_s or app.settings.dedup_ttl_s, REJECTED_ITEM).plaintext)
    else:
        item = value
    event = failed_items.event_from_item(item, app.settings.max_body_bytes)
    arrival = Arrival("redrive", request_id, "", context, Deadline(REDRIVE_BUDGET_S))
    outcome = recovery.process(app, event, arrival, app.settings.dedup_in_flight_s).name
    if outcome == "deferred":  # what the worker, run before hand_off returned, did
        outcome = (worker.take() or ["failed"])[-1]
    return outcome


def shown_path(path: str) -> str:
    """``path`` as ASCII: a report line must not fail on a file name stdout cannot encode."""
    return path.encode("ascii", "backslashreplace").decode("ascii")


def add_commands(commands: Any) -> None:
    """Register ``recover`` and ``redrive`` on the CLI's subparsers."""
    recover = commands.add_parser("recover", help="pull DingTalk's failed-push list and run it here")
    recover.add_argument(
        "--dry-run",
        action="store_true",
        help="list the failed events (with their sealed jobs, for redrive) without running them",
    )
    recover.set_defaults(run=_guarded(cmd_recover))
    redrive = commands.add_parser("redrive", help="run dead letters, journal lines or captured failed items")
    redrive.add_argument("file", help="JSON lines: dead-letter or journal records, FC destination payloads, items")
    redrive.add_argument(
        "--accept-expired",
        action="store_true",
        help="run jobs older than DINGTALK_DEDUP_TTL_SECONDS too (the store may have forgotten they ran)",
    )
    redrive.set_defaults(run=_guarded(cmd_redrive))


def _guarded(command: Any) -> Any:
    def run(args: argparse.Namespace, out: TextIO) -> int:
        try:
            return command(args, out)
        except RecoveryCliError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_UNUSABLE

    return run


__all__: List[str] = ["add_commands", "redrive_entries"]
