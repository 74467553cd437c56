"""The test kit runs deferred handlers through the real hand-off payload and worker entrypoint."""

import threading

import pytest

from dingtalk_fc import Router

APPROVAL = {"EventType": "bpms_instance_change", "eventId": "approval-1", "processInstanceId": "pi-1"}
gate = threading.Event()
runs = []


@pytest.fixture
def dingtalk_router():
    """This module's callback_harness: one deferred handler that waits for the test's signal."""
    gate.clear()
    runs.clear()
    router = Router()

    @router.on("bpms_instance_change", deferred=True)
    def approval(event):
        assert gate.wait(30), "the test never released the handler"
        runs.append(event.key)
        if event.get("fail"):
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
    assert b"secret-instance" not in payloads[0]  # the hand-off carries the event encrypted
    assert runs == ["approval-1"]


def test_a_failing_deferred_handler_is_reported_and_can_run_again(callback_harness):
    gate.set()
    callback_harness.send({**APPROVAL, "fail": True})
    [run] = callback_harness.wait_for_workers()
    assert run.error is not None  # on FC the worker raising means a retry
    assert callback_harness.worker_records[0]["outcome"] == "failed"
    callback_harness.send(APPROVAL)  # DingTalk's retry: the claim was released
    assert [r.outcome for r in callback_harness.wait_for_workers()] == [None, "handled"]
    assert runs == ["approval-1", "approval-1"]


def test_wait_needs_a_harness_that_runs_deferred_handlers(make_harness):
    with pytest.raises(RuntimeError, match="run_deferred=True"):
        make_harness().wait_for_workers()
