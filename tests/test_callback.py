"""The callback function through its WSGI entrypoint: replies, the error table, log records."""

import io
import json
import logging

import pytest
from conftest import CANARY, TEST_ENV, with_canary

from dingtalk_fc import Router
from dingtalk_fc.events import URL_CHECKS
from dingtalk_fc_dev import catalog
from dingtalk_fc_dev.testkit import FakeFcContext, expected_reply

ADD_USER = {"EventType": "user_add_org", "eventId": "evt-1", "CorpId": "dingcorp", "userId": ["u1", "u2"]}


def test_check_url_gets_the_encrypted_success(make_harness):
    harness = make_harness()
    reply = harness.send({"EventType": "check_url"})
    assert reply.status == 200
    assert ("Content-Type", "application/json") in reply.headers
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert harness.last_record["outcome"] == "handled"
    assert harness.last_record["event_type"] == "check_url"


def test_event_is_dispatched_and_recorded(make_harness):
    seen = []
    router = Router()
    router.on("user_add_org")(lambda event: seen.append(event) or {"synced": len(event.user_ids)})
    harness = make_harness(router)
    reply = harness.send(with_canary(ADD_USER))
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert [event.key for event in seen] == ["evt-1"]
    record = harness.last_record
    assert record["event_type"] == "user_add_org"
    assert record["event_id"] == "evt-1"
    assert record["corp_id"] == "dingcorp"
    assert record["user_ids"] == ["u1", "u2"]
    assert record["synced"] == 2
    assert record["outcome"] == "handled"
    assert record["request_id"] == "test-request"
    assert isinstance(record["latency_ms"], float)
    assert CANARY not in harness.log.getvalue()


def test_reply_uses_fresh_nonce_and_current_time(make_harness):
    harness = make_harness(clock=lambda: 1764300000.5)
    first = harness.send({"EventType": "check_url"}).json
    second = harness.send({"EventType": "check_url"}).json
    assert first["timeStamp"] == "1764300000500"
    assert first["nonce"] != second["nonce"]
    assert list(first) == ["msg_signature", "timeStamp", "nonce", "encrypt"]


def test_unhandled_event_type_is_acknowledged(make_harness):
    harness = make_harness(Router())
    reply = harness.send({"EventType": "something_new", "eventId": "e-9"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert harness.last_record["outcome"] == "unhandled"


def test_catch_all_runs_for_unknown_types(make_harness):
    harness = make_harness()
    reply = harness.send({"EventType": "something_new", "eventId": "e-10"})
    assert reply.status == 200
    assert harness.last_record["outcome"] == "unhandled"
    assert harness.last_record["handled_by"] == "catch_all"


CATALOG_SAMPLES = [(t, v) for t in catalog.event_types() for v in catalog.variants(t)]


@pytest.mark.parametrize(("event_type", "variant"), CATALOG_SAMPLES, ids=["-".join(s) for s in CATALOG_SAMPLES])
def test_every_catalog_event_goes_through_the_pipeline(make_harness, event_type, variant):
    harness = make_harness()
    plaintext = catalog.sample(event_type, variant)
    reply = harness.send(plaintext)
    assert harness.sender.check_reply(reply.status, reply.body) == expected_reply(plaintext)
    record = harness.last_record
    assert record["event_type"] == event_type
    assert record["outcome"] == "handled"
    if event_type not in URL_CHECKS:
        assert record["handled_by"] == "catalog"
        expected_id = plaintext.get("eventId") or plaintext.get("BizId")
        assert record["event_id"] == expected_id if expected_id else record["event_id"].startswith("sha256:")
        corp_id = plaintext.get("CorpId", plaintext.get("corpId", plaintext.get("corpid", plaintext.get("AuthCorpId"))))
        assert record.get("corp_id") == corp_id  # legacy approval and HR pushes carry none, or only corpId


def test_identifiers_in_either_spelling_reach_the_record(make_harness):
    harness = make_harness()
    harness.send(catalog.sample("user_leave_org", "legacy"))
    assert harness.last_record["user_ids"] == catalog.sample("user_leave_org", "legacy")["UserId"]
    approval = catalog.sample("bpms_instance_change", "legacy")
    harness.send(approval)
    record = harness.last_record
    assert record["process_instance_id"] == approval["processInstanceId"]
    assert record["result"] == approval["result"]
    assert "title" not in record  # free text stays out
    hr = catalog.sample("hrm_user_record_change")
    harness.send(hr)
    assert harness.last_record["action_type"] == "userInfoChange"
    assert harness.last_record["staff_id"] == hr["staffId"]


def test_health_check_on_get(make_harness):
    harness = make_harness()
    reply = harness.call({"REQUEST_METHOD": "GET", "QUERY_STRING": "", "wsgi.input": io.BytesIO()})
    assert reply.status == 200
    body = reply.json
    assert body["name"] == "dingtalk-fc-callback"
    assert body["version"]
    assert TEST_ENV["DINGTALK_TOKEN"] not in reply.body.decode()


def signed(harness, plaintext="{}", **overrides):
    delivery = harness.sender.build(plaintext)
    environ = delivery.wsgi_environ()
    params = dict(delivery.params)
    params.update(overrides)
    from urllib.parse import urlencode

    environ["QUERY_STRING"] = urlencode({k: v for k, v in params.items() if v is not None})
    return environ


def with_body(environ, body: bytes):
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def encrypted(harness, plaintext: str) -> dict:
    """A correctly signed request whose encrypt holds ``plaintext``."""
    return harness.sender.build(plaintext).wsgi_environ()


# The error table of the README, row by row: (name, build environ, status, errcode).
ERROR_TABLE = [
    ("PUT", lambda h: {**encrypted(h, "{}"), "REQUEST_METHOD": "PUT"}, 405, 900100),
    ("DELETE", lambda h: {**encrypted(h, "{}"), "REQUEST_METHOD": "DELETE"}, 405, 900100),
    ("no signature", lambda h: signed(h, signature=None, msg_signature=None), 400, 900101),
    ("empty signature", lambda h: signed(h, signature="", msg_signature=""), 400, 900101),
    ("no timestamp", lambda h: signed(h, timestamp=None), 400, 900102),
    ("empty timestamp", lambda h: signed(h, timestamp=""), 400, 900102),
    ("no nonce", lambda h: signed(h, nonce=None), 400, 900103),
    ("empty nonce", lambda h: signed(h, nonce=""), 400, 900103),
    ("body not JSON", lambda h: with_body(signed(h), b"encrypt=abc"), 400, 900108),
    ("body a JSON list", lambda h: with_body(signed(h), b'["encrypt"]'), 400, 900108),
    ("no encrypt", lambda h: with_body(signed(h), b'{"other": 1}'), 400, 900109),
    ("empty body", lambda h: with_body(signed(h), b""), 400, 900108),
    ("signature mismatch", lambda h: signed(h, signature="0" * 40, msg_signature="0" * 40), 403, 900005),
    ("signed with another token", lambda h: signed(h, msg_signature=None, signature="a" * 40), 403, 900005),
    ("owner key mismatch", lambda h: owner_mismatch(h), 400, 900008),
    ("plaintext not JSON", lambda h: encrypted(h, "not json"), 400, 900112),
    ("plaintext a JSON string", lambda h: encrypted(h, '"check_url"'), 400, 900112),
    ("no EventType", lambda h: encrypted(h, '{"eventId": "x"}'), 400, 900113),
    ("EventType not a string", lambda h: encrypted(h, '{"EventType": 7}'), 400, 900113),
    ("EventType empty", lambda h: encrypted(h, '{"EventType": ""}'), 400, 900113),
]


def owner_mismatch(harness):
    from dingtalk_fc_dev.testkit import DingTalkSender

    other = DingTalkSender(TEST_ENV["DINGTALK_TOKEN"], TEST_ENV["DINGTALK_AES_KEY"], "dingsomeothercorp000")
    return other.build({"EventType": "check_url"}).wsgi_environ()


@pytest.mark.parametrize(("build", "status", "errcode"), [r[1:] for r in ERROR_TABLE], ids=[r[0] for r in ERROR_TABLE])
def test_error_table(make_harness, build, status, errcode):
    harness = make_harness()
    reply = harness.call(build(harness))
    assert reply.status == status
    assert ("Content-Type", "application/json") in reply.headers
    assert reply.json["errcode"] == errcode
    assert set(reply.json) == {"errcode", "errmsg"}
    assert "msg_signature" not in reply.body.decode()
    record = harness.last_record
    assert record["outcome"] == "rejected"
    assert record["errcode"] == errcode
    assert record["status"] == status


def test_405_names_the_allowed_methods(make_harness):
    reply = make_harness().call({"REQUEST_METHOD": "PUT", "wsgi.input": io.BytesIO()})
    assert ("Allow", "GET, HEAD, POST") in reply.headers


def test_handler_exception_gives_500_logged_with_traceback(make_harness, caplog):
    router = Router()

    @router.on("user_add_org")
    def broken(event):
        raise RuntimeError("directory sync is down")

    harness = make_harness(router)
    with caplog.at_level(logging.ERROR, logger="dingtalk_fc"):
        reply = harness.send(ADD_USER)
    assert reply.status == 500
    assert reply.json == {"errcode": 900130, "errmsg": "handler failed"}
    assert "directory sync is down" not in reply.body.decode()
    assert harness.last_record["outcome"] == "failed"
    assert harness.last_record["event_id"] == "evt-1"
    assert harness.last_record["error_type"] == "RuntimeError"  # what failed, never its message
    assert "directory sync is down" not in json.dumps(harness.last_record)
    [logged] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.startswith("handler for user_add_org failed (event evt-1): RuntimeError\nTraceback")
    assert 'raise RuntimeError("directory sync is down")' in logged  # the source line, where it failed
    assert "directory sync is down" not in logged.replace('raise RuntimeError("directory sync is down")', "")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DINGTALK_TOKEN", None),
        ("DINGTALK_TOKEN", "no spaces allowed"),
        ("DINGTALK_AES_KEY", None),
        ("DINGTALK_AES_KEY", "tooShort"),
        ("DINGTALK_APP_KEY", ""),
        ("DINGTALK_TIMESTAMP_TOLERANCE_SECONDS", "soon"),
        ("DINGTALK_DEDUP_FAIL_CLOSED", "maybe"),
        ("DINGTALK_DEDUP_REDIS_URL", "http://example"),
    ],
)
def test_misconfiguration_gives_500_and_one_line_naming_the_variable(make_harness, caplog, variable, value):
    harness = make_harness(**{variable: value})
    with caplog.at_level(logging.ERROR, logger="dingtalk_fc"):
        reply = harness.send({"EventType": "check_url"})
        again = harness.send({"EventType": "check_url"})
    assert reply.status == again.status == 500
    assert reply.json == {"errcode": 900140, "errmsg": "function misconfigured"}
    config_lines = [r.getMessage() for r in caplog.records if "configuration error" in r.getMessage()]
    assert len(config_lines) == 1
    assert variable in config_lines[0]
    assert harness.last_record["detail"].startswith(variable)
    if value:
        assert value not in config_lines[0]


def test_fc_request_id_reaches_the_record(make_harness):
    harness = make_harness()
    environ = harness.sender.build({"EventType": "check_url"}).wsgi_environ()
    environ["fc.context"] = FakeFcContext(request_id="1-abc-def")
    harness.call(environ)
    assert harness.last_record["request_id"] == "1-abc-def"


def test_timestamp_spelling_timeStamp_and_signature_only_are_accepted(make_harness):
    harness = make_harness()
    delivery = harness.sender.build({"EventType": "check_url"}, both_signatures=False)
    params = dict(delivery.params)
    params["timeStamp"] = params.pop("timestamp")
    params["signature"] = params.pop("msg_signature")
    from urllib.parse import urlencode

    environ = delivery.wsgi_environ()
    environ["QUERY_STRING"] = urlencode(params)
    reply = harness.call(environ)
    assert harness.sender.check_reply(reply.status, reply.body) == "success"


def test_records_are_single_json_lines(make_harness):
    harness = make_harness()
    harness.send({"EventType": "check_url"})
    harness.send(ADD_USER)
    harness.call({"REQUEST_METHOD": "PATCH", "wsgi.input": io.BytesIO()})
    lines = harness.log.getvalue().splitlines()
    assert len(lines) == 3
    for line in lines:
        record = json.loads(line)
        assert {"request_id", "outcome", "status", "latency_ms", "level"} <= set(record)


def test_suite_url_check_replies_success(make_harness):
    """Published vector B is a check_create_suite_url sent during suite creation, when DingTalk
    uses its default suite key: sent byte for byte, the reply is the encrypted success the current
    docs (kb:0243) and DingTalk's ISV quick-start demo give, not the Random an older demo echoed."""
    import json as json_module
    import os

    with open(os.path.join(os.path.dirname(__file__), "data", "vectors.json"), encoding="utf-8") as source:
        vector = json_module.load(source)["vectors"][1]
    harness = make_harness(
        DINGTALK_TOKEN=vector["token"],
        DINGTALK_AES_KEY=vector["aes_key"],
        DINGTALK_APP_KEY=vector["owner_key"],
        DINGTALK_TIMESTAMP_TOLERANCE_SECONDS="0",
    )
    from dingtalk_fc_dev.testkit import Delivery, DingTalkSender

    query = f"signature={vector['signature']}&timestamp={vector['timestamp']}&nonce={vector['nonce']}"
    body = json_module.dumps({"encrypt": vector["encrypt"]}).encode()
    reply = harness.call(Delivery(query, body, {}).wsgi_environ())
    sender = DingTalkSender(vector["token"], vector["aes_key"], vector["owner_key"])
    assert sender.check_reply(reply.status, reply.body) == "success"
    assert harness.last_record["event_type"] == "check_create_suite_url"
    assert harness.last_record["outcome"] == "handled"


def test_url_checks_cannot_be_registered():
    router = Router()
    for event_type in URL_CHECKS:
        with pytest.raises(ValueError, match="answered by the function itself"):
            router.on(event_type)
