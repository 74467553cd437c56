"""The test kit runs deferred handlers through the real deferral payload and worker entrypoint."""

import threading

import pytest

from dingtalk_fc import Router

APPROVAL = {"EventType": "bpms_instance_change", "eventId": "approval-1", "processInstanceId": "pi-1"}
gate = threading.Event()
runs = []
failing = set()


@pytest.fixture
def dingtalk_router():
    """This module's callback_harness: one deferred handler that waits for the test's signal."""
    gate.clear()
    runs.clear()
    failing.clear()
    router = Router()

    @router.on("bpms_instance_change", deferred=True)
    def approval(event):
        assert gate.wait(30), "the test never released the handler"
        runs.append(event.key)
        if failing:
            raise RuntimeError("approval back end down")
        return {"approved": event.get("processInstanceId")}

    return router


def test_reply_comes_before_the_worker_runs(callback_harness):
    reply = callback_harness.send(APPROVAL)
    assert callback_harness.sender.check_reply(reply.status, reply.body) == "success"
    assert callback_harness.callback_records[-1]["outcome"] == "deferred"
    assert runs == []  # the handler is still held by the gate: the reply did not wait for it
    gate.set()
    [run] = callback_harness.wait_for_workers()
    assert (run.outcome, run.error) == ("handled", None)
    assert runs == ["approval-1"]
    [worker_record] = callback_harness.worker_records
    assert worker_record["event_id"] == "approval-1"
    assert worker_record["approved"] == "pi-1"


def test_the_worker_gets_the_pipeline_payload_not_the_plaintext(callback_harness, monkeypatch):
    payloads = []
    real = callback_harness.runtime.run_worker
    monkeypatch.setattr(callback_harness.runtime, "run_worker", lambda p, r, c: payloads.append(p) or real(p, r, c))
    gate.set()
    callback_harness.send({**APPROVAL, "processInstanceId": "secret-instance"})
    callback_harness.wait_for_workers()
    assert len(payloads) == 1
    assert b"secret-instance" not in payloads[0]  # the deferral carries the event encrypted
    assert runs == ["approval-1"]


def test_a_failing_deferred_handler_is_retried_reported_and_dead_lettered_for_redrive(callback_harness):
    """As on FC: the worker raising is retried (3 times), then the job lands in the dead letters,
    whose record ``redrive`` takes; ``run.error`` is what the handler raised."""
    gate.set()
    failing.add("back end down")
    callback_harness.send(APPROVAL)
    [run] = callback_harness.wait_for_workers()
    assert (run.outcome, run.attempts) == ("failed", 4)
    assert isinstance(run.error, RuntimeError)
    assert str(run.error) == "approval back end down"
    assert [r["outcome"] for r in callback_harness.worker_records] == ["failed"] * 4
    assert {r["error_type"] for r in callback_harness.worker_records} == {"RuntimeError"}
    [dead_letter] = callback_harness.dead_letters
    assert (dead_letter["attempts"], dead_letter["condition"]) == (4, "UnhandledInvocationError")
    assert runs == ["approval-1"] * 4
    failing.clear()  # the back end is fixed: the operator re-drives the dead letter
    assert callback_harness.run_worker(dead_letter["job"].encode(), "redrive") == "handled"
    assert runs == ["approval-1"] * 5


def test_wait_needs_a_harness_that_runs_deferred_handlers(make_harness):
    with pytest.raises(RuntimeError, match="run_deferred=True"):
        make_harness().wait_for_workers()
