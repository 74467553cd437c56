"""Recovery at its limits, against the local DingTalk and FC APIs: the largest events a worker
allows, an FC that does not answer, and budgets or timeouts too short to pull a page."""

import json
import time

import pytest
import test_recovery
from conftest import APP_SECRET, STUB_CREDENTIALS, TEST_ENV
from stubs.dingtalk_api import DingTalkApiStub, v1_item
from stubs.fc2_api import FcApiStub
from stubs.fc3_api import Fc3ApiStub
from test_recovery import Handler, context, event

from dingtalk_fc import Router, recovery
from dingtalk_fc_dev.testkit import FakeFcContext

MAX_DEFERRABLE_BODY = "122880"
recovering, cli = test_recovery.recovering, test_recovery.cli  # the fixtures, shared


@pytest.fixture
def with_worker(recovering, monkeypatch):
    """``make(handler, api=FcApiStub, **environ) -> (harness, dingtalk, fc)``: recovery whose
    deferred handler goes to the local FC API, which runs ``index.worker``."""
    import index

    stubs = []

    def make(handler, api=FcApiStub, **environ):
        def run_worker(payload, request_id):
            return index.worker(payload, FakeFcContext(request_id=request_id, function="worker"))

        fc = api(run_worker, STUB_CREDENTIALS)
        stubs.append(fc)
        settings = {"DINGTALK_WORKER_FUNCTION": "worker", "DINGTALK_FC_ENDPOINT": fc.endpoint, **environ}
        if api is Fc3ApiStub:
            settings["DINGTALK_FC_VERSION"] = "3.0"
        harness, dingtalk = recovering(handler, deferred=True, **settings)
        monkeypatch.setattr(index, "runtime", harness.runtime)
        return harness, dingtalk, fc

    yield make
    for fc in stubs:
        fc.wait()
        fc.close()


def large_event(n, kilobytes):
    return {**event(n, "bpms_instance_change"), "form": "x" * (kilobytes * 1024)}


@pytest.mark.parametrize("kilobytes", [97, 110, 119])
def test_a_recovered_event_too_large_for_fcs_async_payload_runs_in_the_recovery(with_worker, kilobytes):
    handler = Handler()
    harness, dingtalk, fc = with_worker(handler, DINGTALK_MAX_BODY_BYTES=MAX_DEFERRABLE_BODY)
    dingtalk.add(v1_item(large_event(1, kilobytes)), v1_item(event(2, "bpms_instance_change")))
    summary = recovery.recover(harness.runtime, "run-1", context())
    fc.wait()
    assert handler.completed == {"ev-1": 1, "ev-2": 1}
    assert (summary["handled"], summary["deferred"], summary["failed"], summary["rejected"]) == (1, 1, 0, 0)
    assert [len(i["body"]) <= 128 * 1024 for i in fc.invocations] == [True]  # only the small one went to FC
    (ran_here,) = [r for r in harness.records if r.get("event_id") == "ev-1" and r.get("outcome")]
    assert ran_here["outcome"] == "handled"
    assert "over FC's" in ran_here["detail"]


def test_a_large_recovered_event_that_fails_is_redriven_from_its_journal_line(with_worker, cli, tmp_path):
    def down_once(received, calls):
        if calls == 1:
            raise RuntimeError("back end down")

    handler = Handler(down_once)
    harness, dingtalk, _fc = with_worker(handler, DINGTALK_MAX_BODY_BYTES=MAX_DEFERRABLE_BODY)
    dingtalk.add(v1_item(large_event(1, 115)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["failed"], summary["level"], handler.completed) == (1, "error", {})
    (journal,) = [r for r in harness.records if r.get("stage") == "pulled"]
    assert len(journal["job"]) > 128 * 1024
    export = tmp_path / "journal.jsonl"
    export.write_text(json.dumps(journal) + "\n")
    router = Router()
    router.on("bpms_instance_change", deferred=True)(handler)
    status, out = cli(router, "redrive", str(export), DINGTALK_MAX_BODY_BYTES=MAX_DEFERRABLE_BODY)
    assert (status, out) == (0, "redrive: 1 entries: 1 handled\n")
    assert handler.completed == {"ev-1": 1}


def test_one_unanswered_fc3_deferral_does_not_stall_the_rest_of_the_page(with_worker):
    handler = Handler()
    harness, dingtalk, fc = with_worker(handler, api=Fc3ApiStub, DINGTALK_RECOVERY_BUDGET_SECONDS="20")
    fc.hold_next = [15.0]  # FC queues the first event but its answer never comes in time
    dingtalk.add(*(v1_item(event(n, "bpms_instance_change")) for n in range(1, 5)))
    started = time.monotonic()
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert time.monotonic() - started < 8  # one request budget for the silent call, not the run's
    assert (summary["not_run"], summary["failed"]) == (0, 0)
    assert summary["deferred"] + summary["retried_on_worker"] == 4
    fc.wait()
    assert handler.completed == {f"ev-{n}": 1 for n in range(1, 5)}


@pytest.mark.parametrize("budget", ["1", "5", "9"])
def test_a_budget_that_can_never_pull_a_page_is_refused_naming_the_variable(recovering, budget):
    harness, dingtalk = recovering(Handler(), DINGTALK_RECOVERY_BUDGET_SECONDS=budget)
    dingtalk.add(v1_item(event(1)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["stopped"], summary["errcode"], summary["level"]) == ("misconfigured", 900140, "error")
    assert summary["detail"] == "DINGTALK_RECOVERY_BUDGET_SECONDS must be at least 10"
    assert dingtalk.requests == []


@pytest.mark.parametrize("timeout", [10, 21, 25, 29])
def test_a_recover_function_timeout_that_can_never_pull_a_page_is_refused(recovering, timeout):
    harness, dingtalk = recovering(Handler())
    dingtalk.add(v1_item(event(1)))
    summary = recovery.recover(harness.runtime, "run-1", context(timeout=timeout))
    assert (summary["stopped"], summary["errcode"], summary["level"]) == ("misconfigured", 900140, "error")
    assert summary["detail"] == f"the recover function's timeout must be at least 30 s ({timeout} s never pulls a page)"
    assert dingtalk.requests == []


def test_the_shortest_accepted_budget_and_timeout_pull_the_page(recovering):
    handler = Handler()
    harness, dingtalk = recovering(handler, DINGTALK_RECOVERY_BUDGET_SECONDS="10")
    dingtalk.add(v1_item(event(1)))
    summary = recovery.recover(harness.runtime, "run-1", context(timeout=30))
    assert (summary["stopped"], summary["handled"], summary["budget_s"]) == ("drained", 1, 10)
    assert handler.completed == {"ev-1": 1}


def test_the_cli_recover_budget_follows_the_variable(recovering, cli):
    harness, dingtalk = recovering(Handler())
    dingtalk.add(v1_item(event(1)))
    settings = {name: value for name, value in harness.runtime.environ.items() if name.startswith("DINGTALK_")}
    status, out = cli(Router(), "recover", **{**settings, "DINGTALK_RECOVERY_BUDGET_SECONDS": "600"})
    report = json.loads(out)
    assert (status, report["budget_s"], report["stopped"], report["handled"]) == (0, 600, "drained", 1)


class NestingDingTalkApi(DingTalkApiStub):
    """DingTalk answering the failed list with a document nested too deeply to parse."""

    def __init__(self, *args):
        super().__init__(*args)
        answer_normally = self.server.RequestHandlerClass

        class Handler(answer_normally):
            def _answer(self):
                if not self.path.startswith("/v1.0/event/callbacks/failedResults"):
                    return answer_normally._answer(self)
                payload = b'{"failedList": ' + b"[" * 100000 + b"]" * 100000 + b"}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.server.RequestHandlerClass = Handler


def test_a_failed_list_answer_nested_too_deeply_stops_the_run_as_unavailable(make_harness):
    summary = test_recovery.recover_once(make_harness, NestingDingTalkApi(test_recovery.APP_KEY, APP_SECRET))
    assert (summary["stopped"], summary["level"]) == ("unavailable", "warning")
    assert summary["detail"] == "HTTP 200, not a JSON object"


def test_a_large_recovered_event_run_in_the_recovery_cannot_be_adopted_by_a_queued_worker_job(with_worker):
    """A recovered event too large for FC runs in the recovery "under the same claim" the
    hand-off would have used, whose token is the FC task id: exactly the token the worker
    adopts. A job of the same event that FC still holds (the push's hand-off that timed out
    but was queued, or FC's retry after a failed worker attempt) adopts the recovery's live
    claim and runs the handler beside it: twice."""
    import index

    big = large_event(1, 97)
    state = {}

    def queued_job_runs_meanwhile(received, calls):
        if calls == 1:  # while the recovery runs it, FC delivers the queued job to a worker
            try:
                state["worker"] = index.worker(state["job"], FakeFcContext(request_id="w-1", function="worker"))
            except Exception as raised:
                state["worker"] = getattr(raised, "outcome", type(raised).__name__)

    handler = Handler(queued_job_runs_meanwhile)
    harness, dingtalk, _fc = with_worker(handler, DINGTALK_MAX_BODY_BYTES=MAX_DEFERRABLE_BODY)
    state["job"] = harness.seal_job(json.dumps(big), "push", "push-request")
    dingtalk.add(v1_item(big))
    recovery.recover(harness.runtime, "run-1", context())
    assert state["worker"] == "in_flight", "the worker adopted the claim of a run in progress"
    assert handler.completed == {"ev-1": 1}


def test_the_cli_recover_does_not_report_a_failed_event_as_retried_on_a_worker(cli):
    """``python -m dingtalk_fc_dev recover`` deletes the items it pulls. An inline handler that
    fails is "requeued" to the CLI's InlineWorker, whose hand_off swallows the worker's failure,
    so the summary on stdout says ``retried_on_worker: 1, failed: 0``: nothing will retry it, no
    dead letter is written, and the only copy of the event is the journal line on stderr (which
    the documented command line does not keep)."""
    stub = DingTalkApiStub(TEST_ENV["DINGTALK_APP_KEY"], APP_SECRET)
    try:
        router = Router()

        @router.on("user_add_org")
        def handler(received):
            raise RuntimeError("back end down")

        stub.add(v1_item(event(1)))
        status, out = cli(
            router,
            "recover",
            DINGTALK_APP_SECRET=APP_SECRET,
            DINGTALK_API_BASE=stub.base,
            DINGTALK_OAPI_BASE=stub.base,
            DINGTALK_RECOVERY_API="v1",
        )
    finally:
        stub.close()
    report = json.loads(out)
    assert status == 1
    assert stub.failed == []  # DingTalk's copy is gone
    assert (report["retried_on_worker"], report["failed"]) == (0, 1), report
