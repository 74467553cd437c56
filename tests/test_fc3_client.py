"""FC 3.0's deferral client: its ACS3-HMAC-SHA256 signature equals the one Aliyun's SDK computes,
and both it and the SDK are accepted by the local FC 3.0 API, which answers 202 / 409 / 5xx."""

import hashlib
import json
import threading
import time

import pytest
from stubs.fc3_api import DUPLICATE_TASK, Fc3ApiStub, expected_signature

from dingtalk_fc import defer_fc3
from dingtalk_fc.defer import DeferralFailed, task_id_for
from dingtalk_fc_dev.testkit import FakeFcContext

CONTEXT = FakeFcContext()
KEY_ID = CONTEXT.credentials.access_key_id
SECRET = CONTEXT.credentials.access_key_secret
TOKEN = CONTEXT.credentials.security_token
CREDENTIALS = (KEY_ID, SECRET, TOKEN)
TASK_ID = task_id_for("dingtestappkey000001:event-1")
PAYLOAD = b'{"key": "event-1", "encrypt": "c2VjcmV0"}'


@pytest.fixture
def stub():
    runs = []
    server = Fc3ApiStub(lambda payload, request_id: runs.append(payload) or "handled", {KEY_ID: (SECRET, TOKEN)})
    server.runs = runs
    yield server
    server.wait()
    server.close()


def send(stub, task_id=TASK_ID, payload=PAYLOAD, credentials=CREDENTIALS, timeout_s=2.0):
    path, headers = defer_fc3.invocation_request(stub.endpoint, "worker", task_id, payload, credentials)
    return defer_fc3.post(stub.endpoint, path, headers, payload, timeout_s)


def sdk_authorization(path, headers):
    """What the SDK's own signer (alibabacloud_tea_openapi) computes for the same request."""
    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.request import DaraRequest

    request = DaraRequest()
    request.method, request.pathname, request.query = "POST", path, {}
    request.headers = {name: value for name, value in headers.items() if name != "Authorization"}
    return Utils.get_authorization(request, "ACS3-HMAC-SHA256", headers["x-acs-content-sha256"], KEY_ID, SECRET)


@pytest.mark.parametrize("token", [TOKEN, ""], ids=["STS credentials", "plain access key"])
def test_signature_equals_the_sdk_signers(token):
    path, headers = defer_fc3.invocation_request(
        "https://1234567890.cn-hangzhou.fc.aliyuncs.com", "worker", TASK_ID, PAYLOAD, (KEY_ID, SECRET, token)
    )
    assert headers["Authorization"] == sdk_authorization(path, headers)
    assert ("x-acs-security-token" in headers) is bool(token)
    assert path == "/2023-03-30/functions/worker/invocations"
    assert headers["host"] == "1234567890.cn-hangzhou.fc.aliyuncs.com"
    assert headers["x-acs-content-sha256"] == hashlib.sha256(PAYLOAD).hexdigest()


def test_signature_is_pinned_for_fixed_inputs():
    """A fixed vector: any change to the canonical request shows here and in the SDK check."""
    path, headers = defer_fc3.invocation_request(
        "https://1234567890.cn-hangzhou.fc.aliyuncs.com", "worker", TASK_ID, PAYLOAD, CREDENTIALS, 1700000000, "n0"
    )
    assert headers["x-acs-date"] == "2023-11-14T22:13:20Z"
    assert headers["Authorization"] == (
        "ACS3-HMAC-SHA256 Credential=STS.test-access-key-id,SignedHeaders=content-type;host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version;"
        "x-fc-async-task-id;x-fc-invocation-type,"
        "Signature=0603854efae0a444326b69d07e75dd54cce840fdd66dfa17eb8ed46d22e931b2"
    )
    assert headers["Authorization"] == sdk_authorization(path, headers)
    signed = sorted(name for name in headers if name != "Authorization")
    lowered = {name: value for name, value in headers.items() if name != "Authorization"}
    assert headers["Authorization"].endswith("Signature=" + expected_signature(SECRET, "POST", path, lowered, signed))


def test_accepted_then_refused_as_a_duplicate_task(stub):
    assert send(stub) == (202, "")
    assert send(stub) == DUPLICATE_TASK
    stub.wait()
    assert stub.runs == [PAYLOAD]
    invocation = stub.accepted()[0]
    assert invocation["function"] == "worker"
    assert invocation["task_id"] == TASK_ID
    assert invocation["headers"]["x-fc-invocation-type"] == "Async"
    assert invocation["headers"]["x-acs-security-token"] == TOKEN


def test_stub_refuses_a_wrong_secret_token_or_tampered_request(stub):
    assert send(stub, credentials=(KEY_ID, "not-the-secret", TOKEN)) == (403, "SignatureNotMatch")
    assert send(stub, credentials=(KEY_ID, SECRET, "other-token")) == (403, "InvalidSecurityToken")
    path, headers = defer_fc3.invocation_request(stub.endpoint, "worker", TASK_ID, PAYLOAD, CREDENTIALS)
    headers["x-fc-async-task-id"] = "dingtalk-other"
    assert defer_fc3.post(stub.endpoint, path, headers, PAYLOAD, 2.0) == (403, "SignatureNotMatch")
    assert defer_fc3.post(stub.endpoint, path, headers, b"other body", 2.0) == (400, "ContentSHA256Mismatch")
    assert stub.accepted() == []


def test_sdk_client_is_accepted_by_the_stub(stub):
    """The stub's verifier agrees with the SDK's whole request path, not only with this project."""
    from alibabacloud_fc20230330 import models
    from alibabacloud_fc20230330.client import Client
    from alibabacloud_tea_openapi.models import Config
    from darabonba.runtime import RuntimeOptions

    host = stub.endpoint.split("://", 1)[1]
    config = Config(
        access_key_id=KEY_ID, access_key_secret=SECRET, security_token=TOKEN, endpoint=host, protocol="http"
    )
    headers = models.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_async_task_id=TASK_ID)
    request = models.InvokeFunctionRequest(body=PAYLOAD)
    runtime = RuntimeOptions(autoretry=False, connect_timeout=1000, read_timeout=1000)
    response = Client(config).invoke_function_with_options("worker", request, headers, runtime)
    assert response.status_code == 202
    stub.wait()
    assert stub.runs == [PAYLOAD]


def test_server_error_and_unreachable(stub):
    stub.fail_next = 1
    assert send(stub) == (500, "InternalServerError")
    endpoint = stub.endpoint
    stub.close()
    path, headers = defer_fc3.invocation_request(endpoint, "worker", TASK_ID, PAYLOAD, CREDENTIALS)
    with pytest.raises(ConnectionRefusedError):
        defer_fc3.post(endpoint, path, headers, PAYLOAD, 1.0)


def test_slow_answer_times_out(stub):
    stub.answer_delay_s = 2.0
    started = time.monotonic()
    with pytest.raises(OSError, match="timed out"):
        send(stub, timeout_s=0.3)
    assert time.monotonic() - started < 1.5


def test_credentials_from_the_context_or_fc3_312_environment():
    assert defer_fc3.credentials_of(CONTEXT, {}) == CREDENTIALS
    environ = dict(zip(defer_fc3.CREDENTIAL_VARIABLES, ("k", "s", "t")))
    without = type("Context312", (), {"request_id": "r", "account_id": "1", "region": "cn-hangzhou"})()
    assert defer_fc3.credentials_of(without, environ) == ("k", "s", "t")
    with pytest.raises(DeferralFailed, match="no credentials"):
        defer_fc3.credentials_of(without, {})


def test_concurrent_deferrals_of_one_event_start_one_task(stub):
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(send(stub)[0])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202] + [409] * 7
    stub.wait()
    assert len(stub.runs) == 1
    assert json.loads(stub.runs[0])["key"] == "event-1"
