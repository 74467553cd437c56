"""Deferred handlers on FC 2.0 end to end: the real fc2.Client hands the event to a local FC 2.0
invoke API, which runs the worker; DingTalk's reply comes back before the slow handler finishes."""

import json
import threading
import time

import pytest
from conftest import TEST_ENV
from stubs.fc2_api import CONCURRENT_UPDATE, DUPLICATE_TASK
from support.counting import APPROVAL, Counter, router_for

from dingtalk_fc import Event, Router
from dingtalk_fc.deadline import Deadline
from dingtalk_fc.dedup import MemoryStore
from dingtalk_fc.defer import Deferrer, task_id_for
from dingtalk_fc.dispatch import guarded
from dingtalk_fc.once import Arrival
from dingtalk_fc_dev.testkit import FakeFcContext

EVENT = {"EventType": "bpms_instance_change", "eventId": "slow-1", "processInstanceId": "pi-1", "result": "agree"}


class SlowHandler:
    def __init__(self, seconds=0.0, failures=0):
        self.seconds, self.failures = seconds, failures
        self.started, self.finished = [], []
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.started.append(event.key)
            attempt = len(self.started)
        time.sleep(self.seconds)
        if attempt <= self.failures:
            raise RuntimeError("approval back end timed out")
        self.finished.append(event.key)
        return {"synced": True}


@pytest.fixture
def deferred(deferred_function):
    """``make(handler, **environ)``: the approval handler deferred, ``user_add_org`` not."""

    def make(handler, **environ):
        router = Router()
        router.on("bpms_instance_change", deferred=True)(handler)
        router.on("user_add_org")(lambda event: None)
        return deferred_function(router, **environ)

    return make


def test_slow_handler_is_deferred_and_runs_exactly_once(deferred):
    handler = SlowHandler(seconds=5)
    harness, stub = deferred(handler)
    started = time.perf_counter()
    reply = harness.send(EVENT)
    reply_ms = (time.perf_counter() - started) * 1000
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert handler.finished == []  # DingTalk has its answer while the handler still works
    assert harness.last_record["outcome"] == "deferred"
    redelivery = harness.send(EVENT)  # DingTalk re-pushes while the worker runs
    assert redelivery.status == 409
    stub.wait()
    assert handler.finished == ["slow-1"]
    assert len(handler.started) == 1
    invocation = stub.accepted()[0]
    assert invocation["service"] == "dingtalk"
    assert invocation["function"] == "worker"
    assert invocation["headers"]["x-fc-invocation-type"] == "Async"
    assert invocation["task_id"] == task_id_for(TEST_ENV["DINGTALK_APP_KEY"] + ":slow-1")
    payload = json.loads(invocation["body"])
    assert "processInstanceId" not in invocation["body"].decode()  # the deferral carries ciphertext only
    assert sorted(payload) == ["dingtalk_fc_job", "fingerprint", "issued_ms", "mac", "request_id", "sealed", "source"]
    worker_record = next(r for r in harness.records if r.get("stage") == "worker")
    assert worker_record["outcome"] == "handled"
    assert worker_record["synced"] is True
    assert worker_record["process_instance_id"] == "pi-1"
    after = harness.send(EVENT)
    assert harness.sender.check_reply(after.status, after.body) == "success"
    assert harness.last_record["outcome"] == "duplicate"
    assert len(handler.started) == 1
    print(f"\ndeferred: reply in {reply_ms:.1f} ms while a 5 s handler ran on the worker")


@pytest.mark.parametrize("error_fields", [("ErrorCode", "ErrorMessage"), ("errorCode", "errorMessage")])
def test_fc_refuses_a_second_deferral_of_the_same_event(deferred, error_fields):
    handler = SlowHandler()
    harness, stub = deferred(handler)
    stub.error_fields = error_fields
    assert harness.send(EVENT).status == 200
    stub.wait()
    # a second instance with its own memory store hands the same event off again: FC says 409
    harness.runtime.use_store(MemoryStore())
    reply = harness.send(EVENT)
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert harness.last_record["outcome"] == "deferred"
    assert len(stub.invocations) == 2
    assert len(stub.accepted()) == 1
    stub.wait()
    assert handler.started == ["slow-1"]


@pytest.mark.parametrize("refusal", [CONCURRENT_UPDATE, (409, ""), (409, DUPLICATE_TASK[1].lower())])
def test_a_409_that_is_not_the_duplicate_task_answer_is_a_failed_deferral(deferred, refusal):
    """Only FC's "this task id exists" means the event is queued; any other conflict queued nothing."""
    handler = SlowHandler()
    harness, stub = deferred(handler)
    stub.refuse_next = [refusal]
    reply = harness.send(EVENT)
    assert reply.status == 503
    assert reply.json == {"errcode": 900131, "errmsg": "deferral failed"}
    assert (harness.last_record["outcome"], stub.accepted()) == ("failed", [])
    retried = harness.send(EVENT)  # DingTalk's retry: the claim was released
    assert harness.sender.check_reply(retried.status, retried.body) == "success"
    stub.wait()
    assert handler.finished == ["slow-1"]


def test_failed_deferral_is_not_success_and_releases_the_claim(deferred):
    handler = SlowHandler()
    harness, stub = deferred(handler)
    stub.fail_next = 1
    reply = harness.send(EVENT)
    assert reply.status == 503
    assert reply.json == {"errcode": 900131, "errmsg": "deferral failed"}
    assert harness.last_record["outcome"] == "failed"
    retried = harness.send(EVENT)
    assert harness.sender.check_reply(retried.status, retried.body) == "success"
    stub.wait()
    assert handler.finished == ["slow-1"]


def test_unreachable_fc_fails_fast(deferred):
    harness, stub = deferred(SlowHandler())
    stub.close()
    started = time.monotonic()
    reply = harness.send(EVENT)
    assert reply.status == 503
    assert time.monotonic() - started < 1.5  # one bounded attempt, no back-off


def test_worker_failure_is_retried_by_the_async_policy(deferred):
    handler = SlowHandler(failures=2)
    harness, stub = deferred(handler)
    assert harness.send(EVENT).status == 200
    stub.wait()
    assert len(handler.started) == 3
    assert handler.finished == ["slow-1"]
    assert [run.get("error") or run["outcome"] for run in stub.worker_runs] == [
        "HandlerFailed",
        "HandlerFailed",
        "handled",
    ]
    worker_outcomes = [r["outcome"] for r in harness.records if r.get("stage") == "worker"]
    assert worker_outcomes == ["failed", "failed", "handled"]


def test_defer_all_sends_every_event_but_check_url_to_the_worker(deferred):
    harness, stub = deferred(SlowHandler(), DINGTALK_DEFER_ALL="1")
    assert harness.send({"EventType": "user_add_org", "eventId": "all-1"}).status == 200
    assert harness.send({"EventType": "check_url"}).status == 200
    stub.wait()
    assert len(stub.accepted()) == 1
    outcomes = sorted(r["outcome"] for r in harness.records if r.get("event_type") == "user_add_org")
    assert outcomes == ["deferred", "handled"]  # the worker's record may be written first


@pytest.mark.parametrize("defer_all", [False, True], ids=["deferred route", "DINGTALK_DEFER_ALL=1"])
def test_deferred_handlers_without_a_worker_are_a_configuration_error(make_harness, defer_all):
    router = Router()
    router.on("bpms_instance_change", deferred=True if not defer_all else None)(lambda event: None)
    harness = make_harness(router, **({"DINGTALK_DEFER_ALL": "1"} if defer_all else {}))
    harness.runtime.start()  # FC's initializer: the error is logged once, at start
    reply = harness.send(EVENT)
    assert reply.status == 500
    assert reply.json["errcode"] == 900140
    assert harness.last_record["detail"].startswith("DINGTALK_WORKER_FUNCTION")


def test_index_worker_runs_a_deferral_payload(deferred):
    import index

    handler = SlowHandler()
    harness, _stub = deferred(handler)
    event = Event.from_data({"EventType": "bpms_instance_change", "eventId": "direct-1"})
    payload = harness.seal_job(event, "push", "r")
    assert index.worker(payload, FakeFcContext(request_id="worker-1")) == "handled"
    assert index.worker(payload, FakeFcContext(request_id="worker-2")) == "duplicate"
    assert handler.finished == ["direct-1"]


def test_local_server_runs_deferred_handlers_in_process(start_server):
    from dingtalk_fc_dev.testkit import DingTalkSender

    server = start_server(DINGTALK_DEFER_ALL="1")
    sender = DingTalkSender(*TEST_ENV.values())
    result = sender.post(server.url, sender.build({"EventType": "user_add_org", "eventId": "local-d1"}))
    assert sender.check_reply(result.status, result.body) == "success"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(r.get("stage") == "worker" for r in server.records()):
        time.sleep(0.05)
    outcomes = sorted((r.get("stage", "http"), r["outcome"]) for r in server.records())
    assert outcomes == [("http", "deferred"), ("worker", "handled")]


def test_deferral_answered_after_the_budget_still_runs_exactly_once(deferred_approval):
    handler = Counter()
    harness, stub = deferred_approval(handler, DINGTALK_REQUEST_BUDGET_MS="300")
    stub.answer_delay_s = 1.0  # FC queues the job, then its answer arrives after the budget
    first = harness.send(APPROVAL)
    assert first.status == 503  # not acknowledged: DingTalk will retry
    stub.answer_delay_s = 0.0
    retry = harness.send(APPROVAL)
    assert harness.sender.check_reply(retry.status, retry.body) == "success"  # FC: task exists
    stub.wait()
    assert handler.finished == ["appr-1"]  # the queued job adopted the claim and ran
    assert [run.get("outcome") for run in stub.worker_runs] == ["handled"]


class RecordingDeferrer(Deferrer):
    """Accepts every deferral; the first raises ``first_error`` when given (empty STS
    credentials make fc2 raise ValueError, which no deferral expected)."""

    def __init__(self, first_error=None):
        self.first_error = first_error
        self.calls = []

    def defer(self, task_id, payload, context, deadline):
        self.calls.append(task_id)
        if self.first_error is not None and len(self.calls) == 1:
            raise self.first_error


def deferring_harness(make_harness, deferrer):
    harness = make_harness(
        router_for(Counter(), "bpms_instance_change", deferred=True), DINGTALK_WORKER_FUNCTION="worker"
    )
    harness.runtime.use_deferrer(deferrer)
    return harness


def test_an_unexpected_deferral_error_releases_the_claim(make_harness):
    deferrer = RecordingDeferrer(ValueError("access key id must not be empty"))
    harness = deferring_harness(make_harness, deferrer)
    assert harness.send(APPROVAL).status == 503
    retry = harness.send(APPROVAL)  # not 409 for the next 15 minutes
    assert harness.sender.check_reply(retry.status, retry.body) == "success"
    assert len(deferrer.calls) == 2


def test_an_event_too_large_for_a_job_is_refused_before_the_deferral(make_harness):
    """Outside a push it runs where it is (recovery, redrive); handing it to the worker is refused."""
    deferrer = RecordingDeferrer()
    dispatcher = deferring_harness(make_harness, deferrer).runtime.load().dispatcher
    huge = Event.from_data(dict(APPROVAL, eventId="huge-1", comment="x" * 120_000))
    arrival = Arrival("recovery", "r", "", None, Deadline(1))
    retry = guarded(lambda: dispatcher.deferral.requeue(huge, arrival), "r")  # recovery's retry on the worker
    assert (retry.problem.errcode, retry.name) == (900133, "failed")
    assert deferrer.calls == []
    result = dispatcher.guarded(huge, arrival)  # outside a push it runs here instead
    assert (result.name, deferrer.calls) == ("handled", [])
