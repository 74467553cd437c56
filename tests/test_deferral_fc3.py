"""Deferred handlers on FC 3.0 end to end: index.fc3_handler hands the event to a local FC 3.0
invoke API with the project's own signed client; the API runs index.worker with FC 3.0's event
(the payload bytes) and context, and its asynchronous retry policy."""

import json
import time

import pytest
from conftest import STUB_CREDENTIALS, TEST_ENV
from stubs.fc2_api import CONCURRENT_UPDATE
from stubs.fc3_api import Fc3ApiStub
from test_deferral_fc2 import EVENT, SlowHandler
from test_fc3_adapter import fc3_event

from dingtalk_fc import Router
from dingtalk_fc.dedup import MemoryStore
from dingtalk_fc.defer import task_id_for
from dingtalk_fc_dev.testkit import FakeFcContext

CONTEXT = FakeFcContext(request_id="1-fc3-callback", function="dingtalk-callback")


class Fc3Context312:
    """FC 3.0's python3.12 context: no ``credentials`` and no ``service`` (reference section 7)."""

    def __init__(self, request_id):
        self.request_id, self.account_id, self.region = request_id, "1234567890", "cn-hangzhou"
        self.log_project, self.log_store = "p", "l"


@pytest.fixture
def deferred_fc3(deferred_function):
    """``make(handler, port=0, **environ)``: the approval handler deferred through FC 3.0's API to
    the local FC 3.0 server, which hands the async invocation's body to ``index.worker``."""

    def make(handler, port=0, **environ):
        router = Router()
        router.on("bpms_instance_change", deferred=True)(handler)
        settings = {"DINGTALK_FC_VERSION": "3.0", **environ}
        return deferred_function(router, api=Fc3ApiStub, worker="dingtalk-worker", port=port, **settings)

    return make


def send(harness, plaintext, context=CONTEXT):
    import index

    response = index.fc3_handler(fc3_event(harness.sender.build(plaintext)), context)
    return response["statusCode"], response["body"].encode()


def test_slow_handler_is_deferred_through_fc3_and_runs_exactly_once(deferred_fc3):
    handler = SlowHandler(seconds=5)
    harness, stub = deferred_fc3(handler)
    started = time.perf_counter()
    status, body = send(harness, EVENT)
    reply_ms = (time.perf_counter() - started) * 1000
    assert harness.sender.check_reply(status, body) == "success"
    assert handler.finished == []  # DingTalk has its answer while the handler still works
    assert harness.last_record["outcome"] == "deferred"
    assert send(harness, EVENT)[0] == 409  # DingTalk re-pushes while the worker runs
    stub.wait()
    assert handler.finished == ["slow-1"]
    assert len(handler.started) == 1
    invocation = stub.accepted()[0]
    assert invocation["function"] == "dingtalk-worker"
    assert invocation["headers"]["x-fc-invocation-type"] == "Async"
    assert invocation["task_id"] == task_id_for(TEST_ENV["DINGTALK_APP_KEY"] + ":slow-1")
    assert "processInstanceId" not in invocation["body"].decode()  # the deferral carries ciphertext only
    assert "sealed" in json.loads(invocation["body"])  # the pipeline's authenticated, encrypted job
    worker_record = next(r for r in harness.records if r.get("stage") == "worker")
    assert worker_record["outcome"] == "handled"
    status, body = send(harness, EVENT)
    assert harness.sender.check_reply(status, body) == "success"
    assert harness.last_record["outcome"] == "duplicate"
    assert len(handler.started) == 1
    print(f"\nFC 3.0 deferred: reply in {reply_ms:.1f} ms while a 5 s handler ran on the worker")


def test_fc3_refuses_a_second_deferral_of_the_same_event(deferred_fc3):
    handler = SlowHandler()
    harness, stub = deferred_fc3(handler)
    assert send(harness, EVENT)[0] == 200
    stub.wait()
    harness.runtime.use_store(MemoryStore())  # another instance's memory
    status, body = send(harness, EVENT)
    assert harness.sender.check_reply(status, body) == "success"  # FC's 409 counts as deferred
    assert [len(stub.invocations), len(stub.accepted())] == [2, 1]
    stub.wait()
    assert handler.started == ["slow-1"]


def test_unreachable_fc3_is_503_and_the_event_stays_retryable(deferred_fc3):
    handler = SlowHandler()
    harness, stub = deferred_fc3(handler)
    port = stub.server.server_address[1]
    stub.close()
    started = time.monotonic()
    status, body = send(harness, EVENT)
    assert status == 503
    assert json.loads(body) == {"errcode": 900131, "errmsg": "deferral failed"}
    assert time.monotonic() - started < 1.5  # one bounded attempt, no back-off
    assert harness.last_record["outcome"] == "failed"
    revived = Fc3ApiStub(stub.worker, STUB_CREDENTIALS, port=port)  # FC is back at the same endpoint
    try:
        status, body = send(harness, EVENT)  # DingTalk's retry of the failed push
        assert harness.sender.check_reply(status, body) == "success"
        revived.wait()
        assert handler.finished == ["slow-1"]
    finally:
        revived.close()


def test_fc3_server_error_is_503_and_releases_the_claim(deferred_fc3):
    handler = SlowHandler()
    harness, stub = deferred_fc3(handler)
    stub.fail_next = 1
    assert send(harness, EVENT)[0] == 503
    assert harness.sender.check_reply(*send(harness, EVENT)) == "success"
    stub.wait()
    assert handler.finished == ["slow-1"]


@pytest.mark.parametrize("refusal", [CONCURRENT_UPDATE, (409, "")])
def test_a_409_from_fc3_that_is_not_the_duplicate_task_answer_is_a_failed_deferral(deferred_fc3, refusal):
    handler = SlowHandler()
    harness, stub = deferred_fc3(handler)
    stub.refuse_next = [refusal]
    status, body = send(harness, EVENT)
    assert (status, json.loads(body)) == (503, {"errcode": 900131, "errmsg": "deferral failed"})
    assert harness.last_record["detail"] == f"FC 3.0 refused the deferral with {refusal[0]} {refusal[1]}".rstrip()
    assert stub.accepted() == []
    assert harness.sender.check_reply(*send(harness, EVENT)) == "success"  # the claim was released
    stub.wait()
    assert handler.finished == ["slow-1"]


def test_worker_failure_is_retried_by_fc3s_async_policy(deferred_fc3):
    handler = SlowHandler(failures=2)
    harness, stub = deferred_fc3(handler)
    assert send(harness, EVENT)[0] == 200
    stub.wait()
    assert [run.get("error") or run["outcome"] for run in stub.worker_runs] == [
        "HandlerFailed",
        "HandlerFailed",
        "handled",
    ]
    assert handler.finished == ["slow-1"]


def test_python312_context_takes_credentials_from_the_environment(deferred_fc3):
    key_id = CONTEXT.credentials.access_key_id
    secret, token = STUB_CREDENTIALS[key_id]
    environ = dict(
        ALIBABA_CLOUD_ACCESS_KEY_ID=key_id, ALIBABA_CLOUD_ACCESS_KEY_SECRET=secret, ALIBABA_CLOUD_SECURITY_TOKEN=token
    )
    handler = SlowHandler()
    harness, stub = deferred_fc3(handler, **environ)
    status, body = send(harness, EVENT, context=Fc3Context312("1-fc3-312"))
    assert harness.sender.check_reply(status, body) == "success"
    stub.wait()
    assert handler.finished == ["slow-1"]
    assert stub.accepted()[0]["headers"]["x-acs-security-token"] == token
