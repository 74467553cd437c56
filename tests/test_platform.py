"""Which FC hands deferred events off: the entry point says it (WSGI is FC 2.0, index.fc3_handler
FC 3.0, a Python 3.12 context can only be FC 3.0's), and DINGTALK_FC_VERSION only where nothing
else can tell; a setting that contradicts the entry point is a configuration error naming it."""

import pytest
from stubs.fc3_api import Fc3ApiStub
from support.counting import APPROVAL, Counter
from test_deferral_fc3 import Fc3Context312, send
from test_fc3_adapter import fc3_event

from dingtalk_fc import Router
from dingtalk_fc_dev.testkit import FakeFcContext


def approval_router(handler):
    router = Router()
    router.on("bpms_instance_change", deferred=True)(handler)
    return router


def test_fc3_handler_hands_off_through_fc3_without_the_variable(deferred_function):
    handler = Counter()
    harness, stub = deferred_function(approval_router(handler), api=Fc3ApiStub, worker="dingtalk-worker")
    status, body = send(harness, APPROVAL)
    assert harness.sender.check_reply(status, body) == "success"
    stub.wait()
    assert [invocation["function"] for invocation in stub.accepted()] == ["dingtalk-worker"]
    assert handler.finished == ["appr-1"]


def test_fc3_handler_with_the_variable_set_to_fc2_is_refused_naming_it(deferred_function):
    import index

    harness, stub = deferred_function(
        approval_router(Counter()), api=Fc3ApiStub, worker="dingtalk-worker", DINGTALK_FC_VERSION="2.0"
    )
    response = index.fc3_handler(fc3_event(harness.sender.build({"EventType": "check_url"})), FakeFcContext())
    assert response["statusCode"] == 500
    assert harness.last_record["errcode"] == 900140
    assert harness.last_record["detail"].startswith("DINGTALK_FC_VERSION is 2.0, but index.fc3_handler runs on FC 3.0")
    assert stub.accepted() == []


def test_the_wsgi_handler_with_the_variable_set_to_fc3_is_refused_naming_it(make_harness):
    harness = make_harness(DINGTALK_FC_VERSION="3.0")
    reply = harness.send({"EventType": "check_url"})
    assert reply.status == 500
    assert harness.last_record["detail"].startswith("DINGTALK_FC_VERSION is 3.0, but the WSGI handler")


@pytest.mark.parametrize(("configured", "accepted"), [(None, True), ("3.0", True), ("2.0", False)])
def test_an_event_function_with_a_python312_context_is_fc3(make_harness, configured, accepted):
    environ = {"DINGTALK_WORKER_FUNCTION": "dingtalk-worker"}
    if configured:
        environ["DINGTALK_FC_VERSION"] = configured
    harness = make_harness(approval_router(Counter()), **environ)
    if accepted:
        assert harness.runtime.load(platform="3.0").platform == "3.0"
        assert harness.runtime.load().platform == (configured or "2.0")  # a 3.9/3.10 context cannot tell
    else:
        with pytest.raises(Exception, match=r"DINGTALK_FC_VERSION is 2.0, but .* runs on FC 3.0"):
            harness.runtime.run_worker(b"{}", "w", Fc3Context312("w"))


def test_without_a_context_that_tells_the_variable_decides(make_harness):
    harness = make_harness(DINGTALK_WORKER_FUNCTION="w", DINGTALK_FC_VERSION="3.0")
    assert harness.runtime.load().platform == "3.0"
