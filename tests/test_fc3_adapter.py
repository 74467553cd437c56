"""FC 3.0's HTTP adapter: index.fc3_handler with the event shape built-in runtimes' HTTP triggers
deliver."""

import base64
import json

import pytest

from dingtalk_fc.http_fc3 import serve
from dingtalk_fc_dev.testkit import FakeFcContext


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


def test_fc3_query_with_a_lone_surrogate_is_refused_not_crashed(make_harness):
    from dingtalk_fc.http_fc3 import serve

    harness = make_harness()
    delivery = harness.sender.build({"EventType": "check_url"})
    event = {
        "body": delivery.body.decode(),
        "queryParameters": dict(delivery.params, nonce="\ud83d"),
        "requestContext": {"http": {"method": "POST"}},
    }
    response = serve(harness.runtime, json.dumps(event).encode(), None)
    assert response["statusCode"] == 403
    assert json.loads(response["body"])["errcode"] == 900005
