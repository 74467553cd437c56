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
from typing import Any, Callable, Dict, Iterator, List, TextIO, Tuple

from dingtalk_fc import dead_letter, failed_items, recovery
from dingtalk_fc.config import ConfigError
from dingtalk_fc.deadline import Deadline
from dingtalk_fc.dingtalk_api import ApiError
from dingtalk_fc.errors import RequestRejected
from dingtalk_fc.pipeline import Deferrer
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


class InlineWorker(Deferrer):
    """Runs each hand-off's job through the worker entrypoint before ``hand_off`` returns and
    keeps its outcome (``failed`` if it raised; the worker's record says why): a thread would
    die with the command, and its outcome would go unreported."""

    def __init__(self, run_worker: Callable[[bytes, str, Any], str]) -> None:
        self._run_worker = run_worker
        self._outcomes = []  # type: List[str]

    def hand_off(self, task_id: str, payload: bytes, context: Any, deadline: Deadline) -> None:
        try:
            outcome = self._run_worker(payload, "local-" + task_id, context)
        except Exception:
            outcome = "failed"
        self._outcomes.append(outcome)

    def take(self) -> List[str]:
        """The outcomes since the last call."""
        taken, self._outcomes = self._outcomes, []
        return taken


def local_runtime(environ: Dict[str, str], records: RecordWriter) -> Tuple[Runtime, InlineWorker]:
    import handlers

    runtime = Runtime(handlers.router, environ=environ, records=records)
    worker = InlineWorker(runtime.run_worker)
    runtime.use_deferrer(worker)
    try:
        runtime.pipeline  # noqa: B018 (validates the configuration now)
    except ConfigError as error:
        raise RecoveryCliError(f"configuration: {error}") from None
    return runtime, worker


def _recovery_settings(environ: Dict[str, str]) -> recovery.RecoverySettings:
    try:
        return recovery.load_recovery_settings(environ)
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
    run = recovery.Recovery(runtime.pipeline, api, settings, records, runtime.pipeline.max_body_bytes)
    # the configured budget: this process has no function timeout to fit in
    summary = run.run("cli-" + uuid.uuid4().hex[:12], FakeFcContext(function="recover"), budget_s=settings.budget_s)
    report = {k: v for k, v in summary.items() if k not in ("request_id", "level")}
    ran = worker.take()
    report["deferred_outcomes"] = {outcome: ran.count(outcome) for outcome in sorted(set(ran))}
    print(json.dumps(report), file=out)
    clean = summary["stopped"] in ("drained", "budget", "max_pages") and "failed" not in ran
    return EXIT_OK if clean and not summary["failed"] and not summary["not_run"] else EXIT_FAILED


def _dry_run(runtime: Runtime, api: Any, settings: recovery.RecoverySettings, out: TextIO) -> int:
    """Print what the list holds, one JSON line per item; runs nothing. DingTalk may delete
    what it returns, so each line carries the event sealed as a job: keep the output, and
    ``redrive`` it to run the events."""
    pipeline = runtime.pipeline
    pulled = 0
    for _page in range(settings.max_pages):
        try:
            page = api.failed_page()
        except ApiError as error:
            print(f"error: DingTalk: {error.kind}: {error}", file=sys.stderr)
            return EXIT_UNUSABLE
        for item in page.items:
            pulled += 1
            try:
                event = failed_items.event_from_item(item, pipeline.max_body_bytes)
            except RequestRejected as rejection:
                line = {"rejected": rejection.problem.errmsg, "detail": rejection.detail}  # type: Dict[str, Any]
                line.update(recovery.kept_item(pipeline, item, "dry-run"))
            else:
                line = {"event_type": event.type, "event_id": event.key, "corp_id": event.corp_id}
                line.update(event.identifiers)
                line["job"] = pipeline.seal_job(event, "recovery", "dry-run").decode("ascii")
            print(json.dumps(line, ensure_ascii=False), file=out)
        if not page.more:
            break
    print(f"{pulled} item(s) in the failed list ({settings.generation} API)", file=sys.stderr)
    return EXIT_OK


def redrive_entries(lines: Iterator[str]) -> Iterator[Tuple[int, str, Any]]:
    """``(line number, kind, value)``: kind ``job`` (bytes of a worker job), ``sealed_item`` (bytes
    of an item recovery rejected, sealed) or ``item``."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise RecoveryCliError(f"line {number}: not JSON") from None
        if isinstance(entry, dict) and "requestPayload" in entry:  # FC's on-failure document
            entry = dead_letter.dead_letter_record(entry, "redrive")
            if "job" not in entry:
                raise RecoveryCliError(f"line {number}: no worker job in the destination payload")
        if isinstance(entry, dict) and isinstance(entry.get("job"), str):  # dead letter or journal
            yield number, "job", entry["job"].encode("utf-8")
        elif isinstance(entry, dict) and isinstance(entry.get("sealed_item"), str):  # a rejected item
            yield number, "sealed_item", entry["sealed_item"].encode("utf-8")
        elif isinstance(entry, dict) and "dingtalk_fc_job" in entry:  # a bare job
            yield number, "job", line.strip().encode("utf-8")
        elif isinstance(entry, dict) and isinstance(entry.get("failedList", entry.get("failed_list")), list):
            for item in entry.get("failedList", entry.get("failed_list")):  # a captured page
                yield number, "item", item
        else:
            yield number, "item", entry  # a captured item (malformed ones are reported)


def cmd_redrive(args: argparse.Namespace, out: TextIO) -> int:
    environ = _environment()
    runtime, worker = local_runtime(environ, RecordWriter(sys.stderr))
    pipeline = runtime.pipeline
    context = FakeFcContext(function="redrive")
    max_age_s = float("inf") if args.accept_expired else None
    with open(args.file, encoding="utf-8") as source:
        entries = list(redrive_entries(source))
    failures = 0
    outcomes = {}  # type: Dict[str, int]
    for number, kind, value in entries:
        request_id = f"redrive-{number}-{uuid.uuid4().hex[:8]}"
        if kind == "job":
            try:
                outcome = pipeline.run_job(value, request_id, context, max_age_s=max_age_s)
            except Exception as error:
                outcome = "failed"
                print(f"FAIL {args.file}:{number}: {type(error).__name__}", file=out)
        else:
            try:
                item = json.loads(pipeline.open_text(value, max_age_s)) if kind == "sealed_item" else value
                event = failed_items.event_from_item(item, pipeline.max_body_bytes)
            except RequestRejected as rejection:
                outcome = "rejected"
                print(f"FAIL {args.file}:{number}: {rejection.problem.errmsg} ({rejection.detail})", file=out)
            else:
                record = pipeline.process_event(event, request_id, context, "redrive", Deadline(REDRIVE_BUDGET_S))
                outcome = record.get("outcome", "failed")
                if outcome == "deferred":  # what the worker, run before hand_off returned, did
                    outcome = (worker.take() or ["failed"])[-1]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        failures += outcome in ("failed", "rejected", "in_flight")
    runtime_summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
    print(f"redrive: {len(entries)} entries: {runtime_summary or 'nothing'}", file=out)
    return EXIT_FAILED if failures else EXIT_OK


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
