"""A public URL receives garbage: every bad request gets its 4xx and errcode, never a 5xx,
never a traceback, and never an encrypted success unless the request verified."""

import base64
import io
import json
import string
import time
from urllib.parse import urlencode

import pytest
from conftest import SECRET_NOTE, TEST_ENV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import product_router
from support.forgery import forge

from dingtalk_crypto import DingTalkCrypto
from dingtalk_fc_dev.testkit import CallbackHarness, DingTalkSender, call_wsgi

VECTOR = {"aes_key": TEST_ENV["DINGTALK_AES_KEY"], "owner_key": TEST_ENV["DINGTALK_APP_KEY"]}
SIGNER = DingTalkCrypto(*TEST_ENV.values())


def request(method="POST", query="", body=b"", content_length=None, **extra):
    environ = {
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
    }
    environ.update(extra)
    return environ


def signed_request(encrypt, timestamp=None, nonce="n0nce123", body=None, **params):
    """A request correctly signed over ``encrypt`` (which may hold anything)."""
    timestamp = timestamp or str(int(time.time() * 1000))
    query = {"msg_signature": SIGNER.signature(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
    query.update(params)
    payload = json.dumps({"encrypt": encrypt}).encode() if body is None else body
    return request(query=urlencode(query), body=payload)


def signed_plaintext(plaintext):
    return signed_request(SIGNER.encrypt(plaintext))


def valid(**overrides):
    """A valid check_url delivery, with query parameters replaced or (None) removed."""
    delivery = DingTalkSender(*TEST_ENV.values()).build({"EventType": "check_url"}, both_signatures=False)
    params = {**delivery.params, **overrides}
    return request(query=urlencode({k: v for k, v in params.items() if v is not None}), body=delivery.body)


def raw_query(query):
    delivery = DingTalkSender(*TEST_ENV.values()).build({"EventType": "check_url"})
    return request(query=query, body=delivery.body)


NOW_MS = int(time.time() * 1000)
BAD_REQUESTS = [
    ("PUT", lambda h: request("PUT"), 405, 900100),
    ("OPTIONS", lambda h: request("OPTIONS"), 405, 900100),
    ("no query at all", lambda h: request(body=b'{"encrypt":"x"}'), 400, 900101),
    ("no signature", lambda h: valid(msg_signature=None), 400, 900101),
    ("no timestamp", lambda h: valid(timestamp=None), 400, 900102),
    ("no nonce", lambda h: valid(nonce=None), 400, 900103),
    ("repeated nonce", lambda h: raw_query(valid()["QUERY_STRING"] + "&nonce=again"), 400, 900104),
    (
        "repeated msg_signature",
        lambda h: raw_query(valid()["QUERY_STRING"] + "&msg_signature=" + "a" * 40),
        400,
        900104,
    ),
    ("conflicting signature spellings", lambda h: valid(signature="b" * 40), 400, 900104),
    ("huge query string", lambda h: raw_query("nonce=" + "x" * 10000), 414, 900105),
    ("timestamp not a number", lambda h: valid(timestamp="yesterday"), 400, 900002),
    ("timestamp in Arabic-Indic digits", lambda h: valid(timestamp="١٢٣٤٥"), 400, 900002),
    ("timestamp of 40 digits", lambda h: valid(timestamp="9" * 40), 400, 900002),
    ("negative timestamp", lambda h: valid(timestamp="-1"), 400, 900002),
    ("nonce of 100 characters", lambda h: valid(nonce="n" * 100), 400, 900003),
    (
        "Content-Length not a number",
        lambda h: request(query=valid()["QUERY_STRING"], content_length="ten"),
        400,
        900106,
    ),
    ("negative Content-Length", lambda h: request(query=valid()["QUERY_STRING"], content_length="-5"), 400, 900106),
    ("absurd Content-Length", lambda h: request(query=valid()["QUERY_STRING"], content_length="9" * 30), 400, 900106),
    ("Content-Length of a petabyte", lambda h: request(content_length=str(10**15)), 413, 900107),
    ("body over 64 KiB", lambda h: request(body=b"{" + b" " * 70000 + b"}"), 413, 900107),
    (
        "body shorter than declared",
        lambda h: request(query=valid()["QUERY_STRING"], body=b"{}", content_length="50"),
        400,
        900106,
    ),
    ("body not UTF-8", lambda h: request(query=valid()["QUERY_STRING"], body=b'{"encrypt": "\xff\xfe"}'), 400, 900114),
    ("body JSON nesting bomb", lambda h: request(query=valid()["QUERY_STRING"], body=b"[" * 60000), 400, 900115),
    ("body JSON null", lambda h: request(query=valid()["QUERY_STRING"], body=b"null"), 400, 900108),
    ("body JSON string", lambda h: request(query=valid()["QUERY_STRING"], body=b'"encrypt"'), 400, 900108),
    ("encrypt is a number", lambda h: request(query=valid()["QUERY_STRING"], body=b'{"encrypt": 5}'), 400, 900109),
    ("encrypt is empty", lambda h: request(query=valid()["QUERY_STRING"], body=b'{"encrypt": ""}'), 400, 900109),
    ("signature of the wrong length", lambda h: valid(msg_signature="abc"), 403, 900005),
    ("signature with non-ASCII", lambda h: valid(msg_signature="签名" * 20), 403, 900005),
    (
        "signature over a different body",
        lambda h: dict(valid(), **{"wsgi.input": io.BytesIO(b'{"encrypt":"QUJD"}'), "CONTENT_LENGTH": "18"}),
        403,
        900005,
    ),
    (
        "timestamp two hours old",
        lambda h: signed_request(SIGNER.encrypt("{}"), timestamp=str(NOW_MS - 7_200_000)),
        403,
        900110,
    ),
    (
        "timestamp two hours ahead",
        lambda h: signed_request(SIGNER.encrypt("{}"), timestamp=str(NOW_MS + 7_200_000)),
        403,
        900110,
    ),
    ("signed invalid base64", lambda h: signed_request("!!!not-base64!!!"), 400, 900008),
    ("signed ciphertext of 40 bytes", lambda h: signed_request("QUJD" * 13 + "QUI="), 400, 900008),
    (
        "signed under another aes_key",
        lambda h: signed_request(
            DingTalkCrypto("t0k", "Zm9yZXZlcnlvbmV3aG9yb3RhdGVzdGhlaXJrZXlzMDE", TEST_ENV["DINGTALK_APP_KEY"]).encrypt(
                "{}"
            )
        ),
        400,
        900008,
    ),
    ("signed with zero padding", lambda h: signed_request(forge(VECTOR, b"{}", pad=0)), 400, 900008),
    ("length field beyond the plaintext", lambda h: signed_request(forge(VECTOR, b"{}", length=9999)), 400, 900008),
    ("plaintext not UTF-8", lambda h: signed_request(forge(VECTOR, b'{"EventType":"\xc3"}')), 400, 900008),
    ("another app's owner key", lambda h: signed_request(forge(VECTOR, b"{}", owner="dingotherapp")), 400, 900008),
    ("plaintext not JSON", lambda h: signed_plaintext("EventType=check_url"), 400, 900112),
    ("plaintext a JSON array", lambda h: signed_plaintext('[{"EventType":"check_url"}]'), 400, 900112),
    ("plaintext nesting bomb", lambda h: signed_plaintext("[" * 5000 + "]" * 5000), 400, 900115),
    ("EventType null", lambda h: signed_plaintext('{"EventType": null}'), 400, 900113),
    ("EventType a list", lambda h: signed_plaintext('{"EventType": ["check_url"]}'), 400, 900113),
    ("EventType a number", lambda h: signed_plaintext('{"EventType": 1}'), 400, 900113),
]


@pytest.fixture
def harness(make_harness):
    return make_harness()


def test_the_table_is_long_enough():
    assert len(BAD_REQUESTS) >= 30
    assert len({row[0] for row in BAD_REQUESTS}) == len(BAD_REQUESTS)


@pytest.mark.parametrize(
    ("build", "status", "errcode"), [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS]
)
def test_bad_request(harness, build, status, errcode):
    reply = harness.call(build(harness))
    assert (reply.status, reply.json.get("errcode")) == (status, errcode), reply.json
    assert set(reply.json) == {"errcode", "errmsg"}
    assert harness.last_record["outcome"] == "rejected"
    assert harness.last_record["errcode"] == errcode


def test_oversized_body_is_refused_without_being_read(harness):
    class Exploding(io.BytesIO):
        def read(self, *args):
            raise AssertionError("the body must not be read")

    reply = harness.call(request(body=b"", content_length=str(65537), **{"wsgi.input": Exploding()}))
    assert reply.status == 413


def test_body_limit_is_configurable(make_harness):
    harness = make_harness(DINGTALK_MAX_BODY_BYTES="2048")
    big = harness.sender.build({"EventType": "check_url", "pad": "x" * 2000})
    assert harness.call(big.wsgi_environ()).status == 413
    assert harness.send({"EventType": "check_url"}).status == 200


def test_chunked_body_without_content_length_is_bounded(harness):
    delivery = harness.sender.build({"EventType": "check_url"})
    environ = delivery.wsgi_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    reply = harness.call(environ)
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    environ = request(query=delivery.query, body=b"[" * 70000, **{"wsgi.input_terminated": True})
    del environ["CONTENT_LENGTH"]
    assert harness.call(environ).status == 413


# -- fuzzing the whole WSGI handler ---------------------------------------------------------------

PARAM_NAMES = ["msg_signature", "signature", "timestamp", "timeStamp", "nonce", "other"]
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@st.composite
def fuzzed_request(draw):
    """Mostly near-valid requests with one thing wrong, some pure garbage, some valid."""
    sender = DingTalkSender(*TEST_ENV.values())
    kind = draw(st.sampled_from(["garbage", "mutated", "structured", "valid"]))
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "post", ""]))
    if kind == "garbage":
        query = draw(st.text(max_size=300))
        body = draw(st.binary(max_size=400))
        return request(method, query, body)
    plaintext = draw(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "EventType": st.sampled_from(["check_url", "user_add_org", "bpms_task_change", "x"]),
                    "eventId": st.text(string.ascii_letters, min_size=1, max_size=8),
                }
            ),
            st.dictionaries(text, st.one_of(text, st.integers(), st.none()), max_size=3),
            text,
        )
    )
    delivery = sender.build(plaintext if isinstance(plaintext, str) else json.dumps(plaintext))
    params = dict(delivery.params)
    body = delivery.body
    if kind == "mutated":
        target = draw(st.sampled_from(["param", "body", "drop", "add"]))
        if target == "param":
            name = draw(st.sampled_from(sorted(params)))
            value = params[name]
            position = draw(st.integers(0, max(0, len(value) - 1)))
            params[name] = value[:position] + draw(st.characters(codec="utf-8")) + value[position + 1 :]
        elif target == "body":
            position = draw(st.integers(0, len(body) - 1))
            body = body[:position] + bytes([draw(st.integers(0, 255))]) + body[position + 1 :]
        elif target == "drop":
            params.pop(draw(st.sampled_from(sorted(params))))
        else:
            params[draw(st.sampled_from(PARAM_NAMES))] = draw(text)
    elif kind == "structured":
        params = draw(st.dictionaries(st.sampled_from(PARAM_NAMES), text, max_size=5))
        body = json.dumps({"encrypt": draw(st.one_of(text, st.integers(), st.none()))}).encode()
    return request(method, urlencode(params), body), delivery


def verifies(environ):
    from urllib.parse import parse_qs

    params = parse_qs(environ["QUERY_STRING"])
    try:
        encrypt = json.loads(environ["wsgi.input"].getvalue())["encrypt"]
        signature = (params.get("msg_signature") or params.get("signature"))[0]
        timestamp = (params.get("timestamp") or params.get("timeStamp"))[0]
        return SIGNER.is_valid_signature(signature, timestamp, params["nonce"][0], encrypt)
    except Exception:
        return False


@pytest.mark.parametrize(
    "examples", [1_000, pytest.param(10_000, marks=pytest.mark.slow)], ids=lambda n: f"{n} requests"
)
def test_fuzzed_requests_never_crash_nor_succeed_unverified(examples):
    """Every generated request gets a JSON answer under 500, and success only when it verifies.
    A thousand by default (seconds); ten thousand in `make test-slow` and CI."""
    harness = CallbackHarness(product_router.router, TEST_ENV)
    tally = {"requests": 0, "success": 0, "rejected": 0}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(fuzzed_request())
    def check(generated):
        environ = generated[0] if isinstance(generated, tuple) else generated
        body = environ["wsgi.input"].getvalue()
        status, _headers, reply = call_wsgi(harness.app, dict(environ, **{"wsgi.input": io.BytesIO(body)}))
        tally["requests"] += 1
        assert status < 500, reply
        if environ["REQUEST_METHOD"] == "HEAD":
            assert (status, reply) == (200, b"")
            return
        answer = json.loads(reply)
        if "encrypt" in answer:
            tally["success"] += 1
            assert status == 200
            assert verifies(dict(environ, **{"wsgi.input": io.BytesIO(body)})), "success for an unverified request"
        else:
            tally["rejected"] += status != 200

    check()
    print(f"fuzz: {tally}")
    assert tally["requests"] >= examples
    assert tally["success"] > examples // 100  # the generator does reach the success path
    assert tally["rejected"] > examples // 2


def test_decryption_failures_give_no_padding_oracle(make_harness):
    """A holder of the token (not of the aes_key) signs ``C' || C_k`` for every value of the
    last byte of ``C'``: had "invalid padding" an answer of its own, the one value that passes
    the padding check would reveal a byte of ``C_k``'s plaintext (256 requests a byte)."""
    harness = make_harness()
    crypto = harness.sender.crypto
    captured = base64.b64decode(crypto.encrypt(json.dumps({"EventType": "user_add_org", "note": SECRET_NOTE})))
    target = captured[32:48]
    answers = set()
    for guess in range(256):
        encrypt = base64.b64encode(bytes(15) + bytes([guess]) + target).decode()
        timestamp, nonce = crypto.timestamp_ms(), crypto.new_nonce()
        query = f"msg_signature={crypto.signature(timestamp, nonce, encrypt)}&timestamp={timestamp}&nonce={nonce}"
        body = json.dumps({"encrypt": encrypt}).encode()
        environ = {"REQUEST_METHOD": "POST", "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body))}
        reply = harness.call(dict(environ, **{"wsgi.input": io.BytesIO(body)}))
        answers.add((reply.status, reply.body))
    assert answers == {(400, b'{"errcode": 900008, "errmsg": "decryption failed"}')}
    assert {r["detail"].split(":")[0] for r in harness.records} > {"900008"}  # the log keeps the reason
