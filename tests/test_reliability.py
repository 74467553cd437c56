"""Issue 9: the holes in "acknowledged means it ran or will run, exactly once", one regression
test per finding (each failed on the code before its fix)."""

import base64
import io
import json
import os
import socket
import threading
import time

import pytest
from conftest import TEST_ENV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dingtalk_fc import Event, Router
from dingtalk_fc.deadline import Deadline
from dingtalk_fc.dedup import MemoryStore
from dingtalk_fc.pipeline import Deferrer
from dingtalk_fc.records import MAX_RECORD_CHARS, RecordWriter
from dingtalk_fc_dev.testkit import CallbackHarness, FakeFcContext

APPROVAL = {"EventType": "bpms_instance_change", "eventId": "appr-1", "processInstanceId": "pi-1"}


class Counter:
    """A handler that counts its runs; fails the first ``failures`` calls; may wait on a gate."""

    def __init__(self, failures=0, gate=None, returns=None):
        self.failures, self.gate, self.returns = failures, gate, returns
        self.calls, self.finished = [], []
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.calls.append(event.key)
            attempt = len(self.calls)
        if self.gate is not None:
            self.gate.wait(10)
        if attempt <= self.failures:
            raise RuntimeError("downstream unavailable")
        self.finished.append(event.key)
        return self.returns


def router_for(handler, event_type="user_add_org", deferred=None):
    router = Router()
    router.on(event_type, deferred=deferred)(handler)
    return router


@pytest.fixture
def deferred(deferred_function):
    """``make(handler, **environ)``: the approval handler deferred to a local FC API."""
    return lambda handler, **environ: deferred_function(
        router_for(handler, "bpms_instance_change", deferred=True), **environ
    )


# -- 1. a hand-off FC accepted but answered late ---------------------------------------------------


def test_hand_off_answered_after_the_budget_still_runs_exactly_once(deferred):
    handler = Counter()
    harness, stub = deferred(handler, DINGTALK_REQUEST_BUDGET_MS="300")
    stub.answer_delay_s = 1.0  # FC queues the job, then its answer arrives after the budget
    first = harness.send(APPROVAL)
    assert first.status == 503  # not acknowledged: DingTalk will retry
    stub.answer_delay_s = 0.0
    retry = harness.send(APPROVAL)
    assert harness.sender.check_reply(retry.status, retry.body) == "success"  # FC: task exists
    stub.wait()
    assert handler.finished == ["appr-1"]  # the queued job adopted the claim and ran
    assert [run.get("outcome") for run in stub.worker_runs] == ["handled"]


# -- 2. the worker trusts nothing it did not seal ----------------------------------------------------


def test_forged_and_replayed_jobs_never_run_a_handler(deferred):
    import index

    handler = Counter()
    harness, _stub = deferred(handler)
    pipeline = harness.runtime.pipeline
    job = pipeline.seal_job(Event.from_data(APPROVAL), "push", "r-1")
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


def test_the_key_comes_from_the_plaintext_not_the_job(deferred):
    import index

    handler = Counter()
    harness, _stub = deferred(handler)
    assert harness.send(APPROVAL).status == 200
    _stub.wait()
    job = json.loads(harness.runtime.pipeline.seal_job(Event.from_data(APPROVAL), "push", "r-2"))
    job["key"] = "made-up-key"  # ignored: not part of the envelope, not read
    assert index.worker(json.dumps(job).encode(), FakeFcContext("w")) == "duplicate"
    assert handler.calls == ["appr-1"]


SECRET_NOTE = "Zq8" + "x7Kd2PmV9rTb4NcW6yHf3LsJ1gQa5uE0"  # plaintext bytes that must never be logged


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
        job = json.loads(harness.runtime.pipeline.seal_job(Event.from_data({"EventType": "x"}), "push", "r"))
        job["sealed"] = encrypt
        with pytest.raises(Exception, match="worker job not authentic"):
            harness.runtime.run_worker(json.dumps(job).encode(), "forged")
    logged = harness.log.getvalue()
    assert logged
    assert [window for window in windows(SECRET_NOTE) if window in logged] == [], logged


# -- 4. a Redis URL that cannot work fails at start, naming the variable -----------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:63x9/0",
        "redis://127.0.0.1:6379/0?socket_timeout=abc",
        "redis://127.0.0.1:6379/0?socket_timeout=30",
        "redis://127.0.0.1:6379/0?retry_on_timeout=yes",
        "redis://127.0.0.1:6379/zero",
        "redis://127.0.0.1:6379/0?no_such_option=1",
        "redis://:6379/0",
    ],
)
def test_unusable_redis_url_is_a_configuration_error(make_harness, url):
    harness = make_harness(DINGTALK_DEDUP_REDIS_URL=url)
    harness.runtime.start()  # the initializer must not raise either
    for reply in (harness.call({"REQUEST_METHOD": "GET"}), harness.send({"EventType": "check_url"})):
        assert reply.status == 500
        assert reply.json == {"errcode": 900140, "errmsg": "function misconfigured"}
        assert harness.last_record["detail"].startswith("DINGTALK_DEDUP_REDIS_URL")


# -- 5. one budget per request ---------------------------------------------------------------------


def timed_send(harness, plaintext):
    started = time.monotonic()
    reply = harness.send(plaintext)
    return reply, time.monotonic() - started


def test_a_trickling_fc_answer_is_bounded_by_the_budget(deferred):
    harness, stub = deferred(Counter(), DINGTALK_REQUEST_BUDGET_MS="400")
    stub.trickle_s = 0.05  # every read gets a byte in time: socket timeouts never fire
    reply, elapsed = timed_send(harness, APPROVAL)
    assert reply.status == 503
    assert harness.last_record["detail"] == "FC did not answer within the request budget"
    assert elapsed < 1.2  # the answer alone takes over 4 s


class HangingServer:
    """Accepts connections and never answers, as a stalled Redis does."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]

    def close(self):
        self.socket.close()


def test_a_hanging_redis_is_bounded_by_the_budget(make_harness):
    server = HangingServer()
    try:
        harness = make_harness(
            router_for(Counter()),
            DINGTALK_DEDUP_REDIS_URL=f"redis://127.0.0.1:{server.port}/0",
            DINGTALK_DEDUP_TIMEOUT_MS="1000",  # each call alone could wait a second
            DINGTALK_REQUEST_BUDGET_MS="300",
            DINGTALK_DEDUP_FAIL_CLOSED="1",
        )
        reply, elapsed = timed_send(harness, {"EventType": "user_add_org", "eventId": "hang-1"})
    finally:
        server.close()
    assert reply.status == 503
    assert reply.json["errcode"] == 900132
    assert harness.last_record["detail"] == "redis: request budget spent"
    assert elapsed < 1.2


def test_a_name_that_does_not_resolve_is_bounded_by_the_budget(make_harness, monkeypatch):
    real_getaddrinfo = socket.getaddrinfo

    def slow_resolver(host, *args, **kwargs):  # a resolver that times out, as an unreachable DNS does
        if host.endswith(".invalid"):
            time.sleep(5)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    harness = make_harness(
        router_for(Counter()),
        DINGTALK_DEDUP_REDIS_URL="redis://redis.does-not-resolve.invalid:6379/0",
        DINGTALK_REQUEST_BUDGET_MS="300",
        DINGTALK_DEDUP_FAIL_CLOSED="1",
    )
    reply, elapsed = timed_send(harness, {"EventType": "user_add_org", "eventId": "dns-1"})
    assert reply.status == 503
    assert elapsed < 1.2


# -- 6. store states that could re-run an event ----------------------------------------------------


class FlakyStore(MemoryStore):
    """A memory store whose ``complete`` fails the first ``failures`` times."""

    def __init__(self, failures, **kwargs):
        super().__init__(**kwargs)
        self.failures = failures

    def complete(self, *args, **kwargs):
        from dingtalk_fc.dedup import StoreUnavailable

        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("redis: TimeoutError")
        return super().complete(*args, **kwargs)


def test_a_failed_completion_is_retried(make_harness):
    handler = Counter()
    harness = make_harness(router_for(handler))
    clock = [1000.0]
    harness.runtime.pipeline._store = FlakyStore(failures=1, clock=lambda: clock[0])
    event = {"EventType": "user_add_org", "eventId": "c-1"}
    delivery = harness.sender.build(event)
    assert harness.call(delivery.wsgi_environ()).status == 200
    clock[0] += 10_000  # long after the in-flight lease
    replay = harness.call(delivery.wsgi_environ())
    assert harness.sender.check_reply(replay.status, replay.body) == "success"
    assert harness.last_record["outcome"] == "duplicate"
    assert handler.calls == ["c-1"]


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"DINGTALK_DEDUP_TTL_SECONDS": "60"}, "DINGTALK_DEDUP_TTL_SECONDS"),
        ({"DINGTALK_DEDUP_IN_FLIGHT_SECONDS": "300"}, "DINGTALK_DEDUP_IN_FLIGHT_SECONDS"),
        (
            {"DINGTALK_TIMESTAMP_TOLERANCE_SECONDS": "3600", "DINGTALK_DEDUP_IN_FLIGHT_SECONDS": "900"},
            "DINGTALK_DEDUP_IN_FLIGHT_SECONDS",
        ),
        ({"DINGTALK_REQUEST_BUDGET_MS": "1500"}, "DINGTALK_REQUEST_BUDGET_MS"),
        ({"DINGTALK_WORKER_FUNCTION": "worker", "DINGTALK_MAX_BODY_BYTES": "200000"}, "DINGTALK_MAX_BODY_BYTES"),
    ],
    ids=["TTL below tolerance", "lease not above tolerance", "wide tolerance", "budget too long", "body over job"],
)
def test_settings_that_would_reopen_a_window_are_refused(make_harness, environ, variable):
    harness = make_harness(**environ)
    reply = harness.send({"EventType": "check_url"})
    assert reply.status == 500
    assert harness.last_record["detail"].startswith(variable)


def test_memory_store_full_of_claims_refuses_new_ones_and_keeps_the_old(make_harness):
    gate = threading.Event()
    handler = Counter(gate=gate)
    harness = make_harness(router_for(handler), DINGTALK_DEDUP_MEMORY_ENTRIES="2")
    threads = [
        threading.Thread(target=harness.send, args=({"EventType": "user_add_org", "eventId": f"m-{n}"},))
        for n in range(2)
    ]
    for thread in threads:
        thread.start()
    while len(handler.calls) < 2:
        time.sleep(0.01)
    third = harness.send({"EventType": "user_add_org", "eventId": "m-2"})
    assert third.status == 503
    assert third.json["errcode"] == 900134
    again = harness.send({"EventType": "user_add_org", "eventId": "m-0"})  # re-pushed while it runs
    assert again.status == 409
    gate.set()
    for thread in threads:
        thread.join()
    assert sorted(handler.calls) == ["m-0", "m-1"]


# -- 8. every failed hand-off releases its claim ---------------------------------------------------


class RecordingDeferrer(Deferrer):
    """Accepts every hand-off; the first raises ``first_error`` when given (empty STS
    credentials make fc2 raise ValueError, which no hand-off expected)."""

    def __init__(self, first_error=None):
        self.first_error = first_error
        self.calls = []

    def hand_off(self, task_id, payload, context, deadline):
        self.calls.append(task_id)
        if self.first_error is not None and len(self.calls) == 1:
            raise self.first_error


def deferring_harness(make_harness, deferrer):
    harness = make_harness(
        router_for(Counter(), "bpms_instance_change", deferred=True), DINGTALK_WORKER_FUNCTION="worker"
    )
    harness.runtime.pipeline._deferrer = deferrer
    return harness


def test_an_unexpected_hand_off_error_releases_the_claim(make_harness):
    deferrer = RecordingDeferrer(ValueError("access key id must not be empty"))
    harness = deferring_harness(make_harness, deferrer)
    assert harness.send(APPROVAL).status == 503
    retry = harness.send(APPROVAL)  # not 409 for the next 15 minutes
    assert harness.sender.check_reply(retry.status, retry.body) == "success"
    assert len(deferrer.calls) == 2


# -- 9. jobs larger than FC's asynchronous payload limit ---------------------------------------------


def test_an_event_too_large_for_a_job_is_refused_before_the_hand_off(make_harness):
    deferrer = RecordingDeferrer()
    pipeline = deferring_harness(make_harness, deferrer).runtime.pipeline
    huge = Event.from_data(dict(APPROVAL, eventId="huge-1", comment="x" * 120_000))
    record = pipeline.process_event(huge, "r", None, "recovery", Deadline(1))
    assert (record["errcode"], record["outcome"]) == (900133, "failed")
    assert deferrer.calls == []
    small = Event.from_data(dict(APPROVAL, eventId="huge-1"))  # the claim was released
    assert pipeline.process_event(small, "r", None, "recovery", Deadline(1))["outcome"] == "deferred"


# -- 10. records: bounded, ASCII, never failing the request -----------------------------------------


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
    harness.runtime._records = RecordWriter(c_locale)
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
    harness.runtime._records = RecordWriter(BrokenStream())
    reply = harness.send({"EventType": "user_add_org", "eventId": "w-1"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert handler.calls == ["w-1"]


def test_fc3_query_with_a_lone_surrogate_is_refused_not_crashed(make_harness):
    from dingtalk_fc.fc3 import serve

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


# -- 11. the worker's claim outlives the worker ------------------------------------------------------


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
    harness.runtime.pipeline._store = spy
    job = harness.runtime.pipeline.seal_job(Event.from_data(APPROVAL), "push", "r")
    context = FakeFcContext("w")
    context.function.timeout = 3600
    assert harness.runtime.run_worker(job, "w", context) == "handled"
    assert spy.leases == [3660]


def test_template_worker_timeout_is_below_the_lease():
    import yaml

    from dingtalk_fc.config import load_settings

    class AnyTag(yaml.SafeLoader):
        pass

    AnyTag.add_multi_constructor("!", lambda loader, suffix, node: None)  # ROS functions (!Ref ...)
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "template.yml")) as source:
        template = yaml.load(source, Loader=AnyTag)
    worker = template["Resources"]["dingtalk-callback"]["worker"]["Properties"]
    assert worker["Timeout"] < load_settings(TEST_ENV).dedup_in_flight_s


# -- found by the adversarial review of the fixes above --------------------------------------------


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
    job = callback.runtime.pipeline.seal_job(Event.from_data(APPROVAL), "push", "r")
    with pytest.raises(Exception, match="worker job not authentic"):
        worker.runtime.run_worker(job, "w", FakeFcContext("w"))
    assert worker.last_record["level"] == "error"
    assert callback.runtime.run_worker(job, "w", FakeFcContext("w")) == "handled"  # a worker that knows it
    assert handler.calls == ["appr-1"]


def test_a_second_delivery_of_a_job_does_not_run_beside_the_first(make_harness):
    """FC's asynchronous delivery is at least once, and a dead letter may be re-driven while
    its first run goes on: only the handed-off claim can be adopted, once."""
    gate = threading.Event()
    handler = Counter(gate=gate)
    harness = make_harness(router_for(handler, "bpms_instance_change"))
    job = harness.runtime.pipeline.seal_job(Event.from_data(APPROVAL), "push", "r")
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


class SlowStore(MemoryStore):
    """Every command through ``deadline.call`` as RedisStore's are; the claim answers after
    ``claim_s``, the completion hangs (a Redis failing over)."""

    def __init__(self, claim_s):
        super().__init__()
        self.claim_s = claim_s

    def claim(self, key, lease_s, token=None, adopt=False, deadline=None):
        deadline.call(time.sleep, self.claim_s)
        return super().claim(key, lease_s, token, adopt)

    def complete(self, key, retention_s, done_by="", deadline=None):
        from dingtalk_fc.deadline import BudgetSpent
        from dingtalk_fc.dedup import StoreUnavailable

        try:
            deadline.call(time.sleep, 5)
        except BudgetSpent:
            raise StoreUnavailable("redis: request budget spent") from None


def test_budget_and_completion_together_stay_inside_the_deadline(make_harness):
    """The completion of a handled event gets a store timeout even when the budget is spent, so
    the two together are bounded: the largest accepted pair still answers inside 1500 ms."""
    refused = make_harness(DINGTALK_REQUEST_BUDGET_MS="1300", DINGTALK_DEDUP_TIMEOUT_MS="200")
    assert refused.send({"EventType": "check_url"}).status == 500
    assert refused.last_record["detail"].startswith("DINGTALK_REQUEST_BUDGET_MS plus DINGTALK_DEDUP_TIMEOUT_MS")
    harness = make_harness(router_for(Counter()), DINGTALK_REQUEST_BUDGET_MS="1200", DINGTALK_DEDUP_TIMEOUT_MS="200")
    harness.runtime.pipeline._store = SlowStore(claim_s=1.19)
    reply, elapsed = timed_send(harness, {"EventType": "user_add_org", "eventId": "slow-store-1"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert "complete failed" in harness.last_record["store_warning"]
    assert elapsed < 1.5


def test_an_id_with_a_lone_surrogate_is_claimed_in_redis(make_harness, redis_url):
    handler = Counter()
    harness = make_harness(router_for(handler), DINGTALK_DEDUP_REDIS_URL=redis_url)
    plaintext = '{"EventType":"user_add_org","eventId":"e-\\ud83d-1","userId":["u1"]}'
    statuses = [harness.send(plaintext).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert [r["outcome"] for r in harness.records] == ["handled", "duplicate", "duplicate"]
    assert len(handler.calls) == 1
