"""The log records: bounded, ASCII, never failing the request, never overwritten by a handler,
and never holding a window of the plaintext whatever is forged."""

import base64
import io
import json

import pytest
from conftest import SECRET_NOTE, TEST_ENV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.counting import Counter, router_for

from dingtalk_fc import Event
from dingtalk_fc.records import MAX_RECORD_CHARS, RecordWriter
from dingtalk_fc_dev.testkit import CallbackHarness


def windows(text, size=4):
    return {text[i : i + size] for i in range(len(text) - size + 1)}


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    block=st.binary(min_size=16, max_size=16),
    where=st.sampled_from(["callback", "worker"]),
)
def test_no_record_carries_a_plaintext_window_whatever_the_forgery(block, where):
    """Flipping bits in the first cipher block moves the decrypted length field, so the "owner
    key" is taken from any offset of the plaintext; a token holder can send that to the
    callback, and anyone allowed to invoke the worker could send it as a job."""
    harness = CallbackHarness(router_for(Counter()), TEST_ENV)
    plaintext = json.dumps({"EventType": "user_add_org", "eventId": "forged-1", "note": SECRET_NOTE})
    crypto = harness.sender.crypto
    ciphertext = bytearray(base64.b64decode(crypto.encrypt(plaintext)))
    ciphertext[:16] = bytes(a ^ b for a, b in zip(ciphertext[:16], block))
    encrypt = base64.b64encode(bytes(ciphertext)).decode()
    if where == "callback":
        timestamp, nonce = crypto.timestamp_ms(), crypto.new_nonce()
        query = f"msg_signature={crypto.signature(timestamp, nonce, encrypt)}&timestamp={timestamp}&nonce={nonce}"
        body = json.dumps({"encrypt": encrypt}).encode()
        environ = {"REQUEST_METHOD": "POST", "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body))}
        harness.call(dict(environ, **{"wsgi.input": io.BytesIO(body)}))
    else:  # a job whose MAC an attacker cannot make: rejected before decryption
        job = json.loads(harness.seal_job(Event.from_data({"EventType": "x"}), "push", "r"))
        job["sealed"] = encrypt
        with pytest.raises(Exception, match="worker job not authentic"):
            harness.runtime.run_worker(json.dumps(job).encode(), "forged")
    logged = harness.log.getvalue()
    assert logged
    assert [window for window in windows(SECRET_NOTE) if window in logged] == [], logged


@pytest.mark.parametrize(
    "event",
    [
        {"EventType": "user_add_org", "eventId": "e" * 40_000, "userId": ["u" * 5000] * 50},
        {"EventType": "user_add_org", "eventId": "surrogate-\ud83d", "userId": ["\udc00"]},
        {"EventType": "user_add_org" + "t" * 5000, "eventId": "long-type"},
        {"EventType": "user_add_org", "eventId": "中文-ids", "userId": ["用户"]},
    ],
    ids=["40 KB of ids", "lone surrogates", "long type", "non-ASCII under a C locale"],
)
def test_records_are_bounded_ascii_and_never_fail_the_request(make_harness, event):
    handler = Counter(returns={"blob": "b" * 100_000, "nested": {"deep": ["x"] * 10_000}})
    harness = make_harness(router_for(handler, event["EventType"]), DINGTALK_MAX_BODY_BYTES="1000000")
    c_locale = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")  # what LANG=C gives stdout
    harness.runtime.records = RecordWriter(c_locale)
    plaintext = json.dumps(event)  # the surrogates travel as JSON escapes, as DingTalk's would
    reply = harness.send(plaintext)
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert len(handler.calls) == 1
    c_locale.flush()
    lines = c_locale.buffer.getvalue().decode("ascii").splitlines()
    assert len(lines) == 1
    assert len(lines[0]) <= MAX_RECORD_CHARS
    assert json.loads(lines[0])["outcome"] == "handled"


def test_a_record_that_cannot_be_written_does_not_fail_the_request(make_harness):
    class BrokenStream(io.StringIO):
        def write(self, text):
            raise OSError("broken pipe")

    handler = Counter()
    harness = make_harness(router_for(handler))
    harness.runtime.records = RecordWriter(BrokenStream())
    reply = harness.send({"EventType": "user_add_org", "eventId": "w-1"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert handler.calls == ["w-1"]


def test_handler_returns_cannot_overwrite_the_records_own_fields(make_harness):
    handler = Counter(returns={"outcome": "hacked", "event_type": "x", "status": 1, "synced": 3})
    harness = make_harness(router_for(handler))
    reply = harness.send({"EventType": "user_add_org", "eventId": "r-1"})
    assert reply.status == 200
    record = harness.last_record
    assert (record["outcome"], record["event_type"], record["status"]) == ("handled", "user_add_org", 200)
    assert record["synced"] == 3
    assert record["handler_warning"] == "reserved fields ignored: event_type, outcome, status"


@pytest.mark.parametrize("returned", ["a string", 42, ["a", "list"], object()])
def test_handler_returning_a_non_mapping_is_handled_with_a_warning(make_harness, returned):
    handler = Counter(returns=returned)
    harness = make_harness(router_for(handler))
    reply = harness.send({"EventType": "user_add_org", "eventId": "nm-1"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert harness.last_record["outcome"] == "handled"
    assert "not a mapping: ignored" in harness.last_record["handler_warning"]
    assert harness.send({"EventType": "user_add_org", "eventId": "nm-1"}).status == 200  # done: not re-run
    assert handler.calls == ["nm-1"]
