"""The worker function: it runs only jobs this app sealed, takes the event's key from the
plaintext, adopts the deferral's claim once and holds it for longer than its own timeout."""

import json
import threading
import time

import pytest
from conftest import TEST_ENV
from support.counting import APPROVAL, Counter, router_for

from dingtalk_fc import Event
from dingtalk_fc.dedup import MemoryStore
from dingtalk_fc_dev.testkit import FakeFcContext


def test_forged_and_replayed_jobs_never_run_a_handler(deferred_approval):
    import index

    handler = Counter()
    harness, _stub = deferred_approval(handler)
    job = harness.seal_job(Event.from_data(APPROVAL), "push", "r-1")
    fields = json.loads(job)
    forged_jobs = [
        json.dumps(dict(fields, mac="0" * 64)).encode(),  # wrong MAC
        json.dumps(dict(fields, source="redrive")).encode(),  # a field changed under the MAC
        json.dumps({"encrypt": harness.sender.crypto.encrypt(json.dumps(APPROVAL))}).encode(),  # old format
        harness.sender.build(APPROVAL).body,  # a captured DingTalk request
        b"not json",
    ]
    for forged in forged_jobs:  # raised, so FC retries and then dead-letters it: never run
        with pytest.raises(Exception, match="worker job not authentic"):
            index.worker(forged, FakeFcContext("forged"))
        assert harness.last_record["errcode"] == 900150
    assert handler.calls == []
    assert index.worker(job, FakeFcContext("real")) == "handled"
    assert index.worker(job, FakeFcContext("replayed")) == "duplicate"
    assert handler.calls == ["appr-1"]


def test_the_key_comes_from_the_plaintext_not_the_job(deferred_approval):
    import index

    handler = Counter()
    harness, _stub = deferred_approval(handler)
    assert harness.send(APPROVAL).status == 200
    _stub.wait()
    job = json.loads(harness.seal_job(Event.from_data(APPROVAL), "push", "r-2"))
    job["key"] = "made-up-key"  # ignored: not part of the envelope, not read
    assert index.worker(json.dumps(job).encode(), FakeFcContext("w")) == "duplicate"
    assert handler.calls == ["appr-1"]


def test_a_job_sealed_with_a_pair_the_worker_does_not_know_is_retried_not_dropped(make_harness):
    """During a rotation the callback's and the worker's instances are replaced independently: a
    job the worker cannot authenticate must go back to FC (retries, then the on-failure
    destination), not be counted a success."""
    handler = Counter()
    callback = make_harness(
        router_for(handler, "bpms_instance_change"),
        DINGTALK_TOKEN="n3wTokenAfterRotation",
        DINGTALK_AES_KEY="A" * 42 + "E",
        DINGTALK_PREVIOUS_TOKEN=TEST_ENV["DINGTALK_TOKEN"],
        DINGTALK_PREVIOUS_AES_KEY=TEST_ENV["DINGTALK_AES_KEY"],
    )
    worker = make_harness(router_for(handler, "bpms_instance_change"))  # still on the old pair
    job = callback.seal_job(Event.from_data(APPROVAL), "push", "r")
    with pytest.raises(Exception, match="worker job not authentic"):
        worker.runtime.run_worker(job, "w", FakeFcContext("w"))
    assert worker.last_record["level"] == "error"
    assert callback.runtime.run_worker(job, "w", FakeFcContext("w")) == "handled"  # a worker that knows it
    assert handler.calls == ["appr-1"]


def test_a_second_delivery_of_a_job_does_not_run_beside_the_first(make_harness):
    """FC's asynchronous delivery is at least once, and a dead letter may be re-driven while
    its first run goes on: only the deferred claim can be adopted, once."""
    gate = threading.Event()
    handler = Counter(gate=gate)
    harness = make_harness(router_for(handler, "bpms_instance_change"))
    job = harness.seal_job(Event.from_data(APPROVAL), "push", "r")
    first = threading.Thread(target=harness.runtime.run_worker, args=(job, "w-1", FakeFcContext("w-1")))
    first.start()
    while not handler.calls:
        time.sleep(0.01)
    with pytest.raises(Exception, match="event already in progress"):  # FC retries it later
        harness.runtime.run_worker(job, "w-2", FakeFcContext("w-2"))
    gate.set()
    first.join(10)
    assert handler.calls == ["appr-1"]
    assert harness.runtime.run_worker(job, "w-3", FakeFcContext("w-3")) == "duplicate"


class LeaseSpy(MemoryStore):
    def __init__(self):
        super().__init__()
        self.leases = []

    def claim(self, key, lease_s, *args, **kwargs):
        self.leases.append(lease_s)
        return super().claim(key, lease_s, *args, **kwargs)


def test_the_worker_claims_for_longer_than_its_timeout(make_harness):
    harness = make_harness(router_for(Counter(), "bpms_instance_change"))
    spy = LeaseSpy()
    harness.runtime.use_store(spy)
    job = harness.seal_job(Event.from_data(APPROVAL), "push", "r")
    context = FakeFcContext("w")
    context.function.timeout = 3600
    assert harness.runtime.run_worker(job, "w", context) == "handled"
    assert spy.leases == [3660]


@pytest.mark.parametrize("mac", ["é" * 64, "\udcff" * 64, "A" * 64, "0" * 63])
def test_a_forged_job_with_a_malformed_mac_is_not_authentic_and_logs_no_traceback(deferred_approval, mac, caplog):
    import index

    handler = Counter()
    harness, _stub = deferred_approval(handler)
    fields = json.loads(harness.seal_job(Event.from_data(APPROVAL), "push", "r"))
    forged = json.dumps(dict(fields, mac=mac)).encode()
    with pytest.raises(Exception, match="worker job not authentic"):
        index.worker(forged, FakeFcContext("forged"))
    assert harness.last_record["errcode"] == 900150
    assert "Traceback" not in caplog.text
    assert handler.calls == []
