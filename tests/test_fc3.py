"""FC 3.0: index.fc3_handler with the event shape of built-in runtimes' HTTP triggers, and the
s.yaml that Serverless Devs renders offline (`s preview`), checked against the fc3 schema."""

import base64
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT

from dingtalk_fc.fc3 import serve
from dingtalk_fc_dev.testkit import FakeFcContext

FC3_SCHEMA = os.path.join(ROOT, "tests", "data", "fc3-props.schema.json")  # devsapp/fc3 props schema
S = os.path.join(ROOT, "node_modules", ".bin", "s")


def fc3_event(delivery=None, method="POST", base64_body=False, body=None, query=None):
    """The event FC 3.0 hands a built-in runtime for an HTTP trigger (reference section 2)."""
    raw = delivery.body if delivery is not None else (body or b"")
    return json.dumps(
        {
            "version": "v1",
            "rawPath": "/dingtalk",
            "body": base64.b64encode(raw).decode() if base64_body else raw.decode("utf-8", "replace"),
            "isBase64Encoded": base64_body,
            "headers": {"Content-Type": "application/json", "User-Agent": "DingTalk"},
            "queryParameters": query if query is not None else (delivery.params if delivery is not None else {}),
            "requestContext": {
                "accountId": "1234567890",
                "domainName": "callback.example.com",
                "domainPrefix": "callback",
                "http": {
                    "method": method,
                    "path": "/dingtalk",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "203.119.1.1",
                    "userAgent": "DingTalk",
                },
                "requestId": "1-64f6cd87-1234",
                "time": "2023-09-05T06:41:11Z",
                "timeEpoch": "1693896071895",
            },
        }
    ).encode()


@pytest.fixture
def harness(make_harness):
    return make_harness()


def call(harness, event):
    return serve(harness.runtime, event, FakeFcContext(request_id="1-64f6cd87-1234"))


@pytest.mark.parametrize("base64_body", [False, True], ids=["text body", "base64 body"])
def test_check_url_and_event_through_fc3(harness, base64_body):
    for plaintext in ({"EventType": "check_url"}, {"EventType": "user_add_org", "eventId": "fc3-1", "userId": ["a"]}):
        response = call(harness, fc3_event(harness.sender.build(plaintext), base64_body=base64_body))
        assert response["statusCode"] == 200
        assert response["headers"] == {"Content-Type": "application/json"}
        assert response["isBase64Encoded"] is False
        assert harness.sender.check_reply(200, response["body"].encode()) == "success"
    assert harness.last_record["request_id"] == "1-64f6cd87-1234"
    assert harness.last_record["user_ids"] == ["a"]


def test_get_is_the_health_check(harness):
    response = call(harness, fc3_event(method="GET"))
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "ok"


@pytest.mark.parametrize(
    ("make_event", "status", "errcode"),
    [
        (lambda h: fc3_event(method="PUT"), 405, 900100),
        (lambda h: fc3_event(body=b'{"encrypt": "x"}', query={}), 400, 900101),
        (
            lambda h: fc3_event(
                h.sender.build({"EventType": "check_url"}),
                query={"msg_signature": "0" * 40, "timestamp": "1", "nonce": "n"},
            ),
            403,
            900005,
        ),
        (lambda h: fc3_event(body=b"x" * 70000, query={}), 413, 900107),
        (lambda h: fc3_event(body=b"y" * 70000, base64_body=True, query={}), 413, 900107),
        (lambda h: b"not json", 400, 900108),
        (lambda h: b"[1, 2]", 400, 900108),
        (
            lambda h: json.dumps({**json.loads(fc3_event()), "body": "e30=\n!", "isBase64Encoded": True}).encode(),
            400,
            900108,
        ),
    ],
    ids=[
        "PUT",
        "no signature",
        "bad signature",
        "body too large",
        "base64 body too large",
        "event not JSON",
        "event not an object",
        "body not valid base64",
    ],
)
def test_same_error_table_as_fc2(harness, make_event, status, errcode):
    response = call(harness, make_event(harness))
    assert response["statusCode"] == status
    assert json.loads(response["body"])["errcode"] == errcode
    assert harness.last_record["errcode"] == errcode


def test_index_fc3_handler_is_wired(harness, monkeypatch):
    import index

    monkeypatch.setattr(index, "runtime", harness.runtime)
    response = index.fc3_handler(fc3_event(harness.sender.build({"EventType": "check_url"})), FakeFcContext())
    assert harness.sender.check_reply(response["statusCode"], response["body"].encode()) == "success"


# Dummy values: `s` writes the rendered file, secrets included, into $HOME/.s/logs.
DEPLOY_ENV = {
    "DINGTALK_TOKEN": "dummyDeployToken",
    "DINGTALK_AES_KEY": "dummy-aes-key-for-s-preview-0000000000000000",
    "DINGTALK_APP_KEY": "dingdummyappkey",
    "DINGTALK_DEDUP_REDIS_URL": "redis://:dummy-redis-password@r-your-instance.redis.rds.aliyuncs.com:6379/0",
    "DINGTALK_APP_SECRET": "dummy-app-secret",  # the recover function reads it
}
DUMMY_PEM = "-----BEGIN CERTIFICATE-----\nZHVtbXk=\n-----END CERTIFICATE-----\n"


def s_preview(path, home):
    """`s preview` of ``path`` next to placeholder certificates (certs/ is not in the repository)."""
    folder = os.path.dirname(path)
    os.makedirs(os.path.join(folder, "certs"), exist_ok=True)
    for name in ("fullchain.pem", "privkey.pem"):
        with open(os.path.join(folder, "certs", name), "w") as out:
            out.write(DUMMY_PEM)
    env = {**os.environ, **DEPLOY_ENV, "HOME": str(home)}
    return subprocess.run(
        [S, "preview", "-t", path, "-o", "json"], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


def render_s_yaml(tmp_path, home, mutate=None):
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as source:
        text = source.read()
    copy = tmp_path / "s.yaml"
    copy.write_text(mutate(text) if mutate else text)
    result = s_preview(str(copy), home)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout[result.stdout.index("{") :])


def without_vpc(text):
    """The variant without Redis: the in-memory store, no VPC."""
    start, end = text.index("      vpcConfig:"), text.index("      instanceLifecycleConfig:")
    return (text[:start] + text[end:]).replace("      vpcConfig: *vpcConfig\n", "")


@pytest.mark.parametrize("mutate", [None, without_vpc], ids=["as shipped: HTTPS, Redis in a VPC", "no VPC"])
def test_s_yaml_renders_offline_and_matches_the_fc3_schema(tmp_path, s_home, mutate):
    rendered = render_s_yaml(tmp_path, s_home, mutate)
    props = rendered["resources"]["callback"]["props"]
    assert rendered["resources"]["callback"]["component"] == "fc3"
    assert props["runtime"] == "python3.10"
    assert props["handler"] == "index.fc3_handler"
    assert props["code"] == "./build/run-make-package/python3.10.zip"
    assert props["instanceLifecycleConfig"]["initializer"]["handler"] == "index.initializer"
    worker = rendered["resources"]["worker"]["props"]
    callback_environment = {k: v for k, v in DEPLOY_ENV.items() if k != "DINGTALK_APP_SECRET"}
    environment = {
        **callback_environment,
        "DINGTALK_FC_VERSION": "3.0",
        "DINGTALK_WORKER_FUNCTION": worker["functionName"],
    }
    assert props["environmentVariables"] == environment  # secrets substituted from the environment
    assert props["triggers"][0]["triggerConfig"] == {"authType": "anonymous", "methods": ["GET", "HEAD", "POST"]}
    domain = props["customDomain"]
    assert domain["route"]["path"] == "/*"
    assert domain["protocol"] == "HTTP,HTTPS"
    assert domain["certConfig"]["certificate"] == domain["certConfig"]["privateKey"] == DUMMY_PEM
    assert set(props["logConfig"]) == {"project", "logstore"}
    assert props["role"] == worker["role"]  # the callback's STS credentials invoke the worker
    assert worker["handler"] == "index.worker"
    assert (worker["runtime"], worker["code"]) == (props["runtime"], props["code"])
    assert worker["environmentVariables"] == environment  # the worker decrypts the hand-off
    assert worker["logConfig"] == props["logConfig"]
    async_config = worker["asyncInvokeConfig"]
    assert async_config["asyncTask"] is True  # needed for x-fc-async-task-id
    assert async_config["maxAsyncRetryAttempts"] >= 1
    assert async_config["maxAsyncEventAgeInSeconds"] >= 3600
    assert async_config["destinationConfig"]["onFailure"]["destination"].endswith("functions/dingtalk-dead-letter")
    for name in ("callback", "worker", "recover"):  # every function that reaches Redis
        assert ("vpcConfig" in rendered["resources"][name]["props"]) is (mutate is None)
    with open(FC3_SCHEMA, encoding="utf-8") as source:
        schema = json.load(source)
    for resource in rendered["resources"].values():
        jsonschema.validate(resource["props"], schema)


def test_s_writes_rendered_secrets_under_its_home(tmp_path, s_home):
    """What the README warns about: `s` logs the rendered values in clear text under ~/.s/logs
    (here the test's own HOME, removed with tmp_path)."""
    render_s_yaml(tmp_path, s_home)
    logs = [Path(d, f) for d, _, files in os.walk(s_home / ".s" / "logs") for f in files]
    assert logs
    assert any(DEPLOY_ENV["DINGTALK_TOKEN"] in log.read_text(errors="replace") for log in logs)


def test_s_preview_fails_on_a_broken_file(tmp_path, s_home):
    broken = tmp_path / "s.yaml"
    broken.write_text("edition: 3.0.0\nname: x\n  resources: [\n")
    assert s_preview(str(broken), s_home).returncode != 0


def test_fc3_schema_would_catch_a_wrong_runtime():
    with open(FC3_SCHEMA, encoding="utf-8") as source:
        schema = json.load(source)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "region": "cn-hangzhou",
                "functionName": "f",
                "runtime": "python3.11",
                "handler": "index.fc3_handler",
                "code": "./",
            },
            schema,
        )
