"""Each event's handler runs once: claims, duplicates, failures, replays and key rotation."""

import threading
import time

import pytest
from conftest import PREVIOUS_KEYS, TEST_ENV
from support.counting import Counter, router_for

from dingtalk_fc import Router
from dingtalk_fc.dedup import CLAIMED, DONE, IN_FLIGHT, MemoryStore
from dingtalk_fc_dev.testkit import DingTalkSender

EVENT = {"EventType": "user_modify_org", "eventId": "evt-42", "CorpId": "dingcorp", "userId": ["u1"]}


def as_tuple(claim):
    return claim.state, claim.token, claim.done_by


def counting_router(calls, event_type="user_modify_org", fail_times=0, gate=None):
    router = Router()

    @router.on(event_type)
    def handler(event):
        calls.append(event.key)
        if gate is not None:
            gate.wait(10)
        if len(calls) <= fail_times:
            raise RuntimeError("downstream unavailable")

    return router


def test_duplicate_of_a_done_event_is_acknowledged_without_running(make_harness):
    calls = []
    harness = make_harness(counting_router(calls))
    first, second = harness.send(EVENT), harness.send(EVENT)
    assert harness.sender.check_reply(first.status, first.body) == "success"
    assert harness.sender.check_reply(second.status, second.body) == "success"
    assert calls == ["evt-42"]
    assert [r["outcome"] for r in harness.records] == ["handled", "duplicate"]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ({"eventId": "a", "BizId": "b1"}, {"eventId": "a", "BizId": "b2"}, True),
        ({"BizId": "b1"}, {"BizId": "b1", "extra": 1}, True),
        ({"TimeStamp": "1"}, {"TimeStamp": "1"}, True),
        ({"TimeStamp": "1"}, {"TimeStamp": "2"}, False),
    ],
    ids=["eventId wins", "BizId next", "same plaintext digest", "different plaintext digest"],
)
def test_idempotency_key_is_event_id_then_biz_id_then_digest(make_harness, first, second, same):
    calls = []
    harness = make_harness(counting_router(calls))
    harness.send({"EventType": "user_modify_org", **first})
    harness.send({"EventType": "user_modify_org", **second})
    assert len(calls) == (1 if same else 2)


def test_failed_handler_releases_the_claim_so_the_next_delivery_runs(make_harness):
    calls = []
    harness = make_harness(counting_router(calls, fail_times=1))
    failed = harness.send(EVENT)
    assert failed.status == 500
    assert failed.json["errcode"] == 900130
    retried = harness.send(EVENT)
    assert harness.sender.check_reply(retried.status, retried.body) == "success"
    assert calls == ["evt-42", "evt-42"]
    assert [r["outcome"] for r in harness.records] == ["failed", "handled"]
    assert harness.send(EVENT).status == 200
    assert len(calls) == 2


def test_duplicate_while_in_flight_gets_409_and_stays_retryable(make_harness):
    calls, gate = [], threading.Event()
    harness = make_harness(counting_router(calls, fail_times=1, gate=gate))
    replies = {}
    first = threading.Thread(target=lambda: replies.setdefault("first", harness.send(EVENT)))
    first.start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.005)
    concurrent = harness.send(EVENT)
    assert concurrent.status == 409
    assert concurrent.json == {"errcode": 900120, "errmsg": "event already in progress"}
    gate.set()
    first.join(10)
    assert replies["first"].status == 500  # the first attempt failed after all...
    later = harness.send(EVENT)
    assert later.status == 200  # ...so the event was still there to be retried
    assert calls == ["evt-42", "evt-42"]
    assert "in_flight" in [r["outcome"] for r in harness.records]


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def claim(self, *args, **kwargs):
        self.calls += 1
        return super().claim(*args, **kwargs)


def test_check_url_never_touches_the_store(make_harness):
    harness = make_harness()
    store = CountingStore()
    harness.runtime.use_store(store)
    for _ in range(3):
        assert harness.send({"EventType": "check_url"}).status == 200
    assert store.calls == 0
    harness.send(EVENT)
    assert store.calls > 0


# -- replay protection ---------------------------------------------------------------------------


def test_exact_replay_of_a_done_event_is_acknowledged_without_running(make_harness):
    """DingTalk may retry byte for byte: a 403 would turn a lost reply into a push that fails on
    every retry. The replay runs nothing, so it gets ``success``, flagged in the record."""
    calls = []
    harness = make_harness(counting_router(calls))
    delivery = harness.sender.build(EVENT)
    assert harness.call(delivery.wsgi_environ()).status == 200
    replayed = harness.call(delivery.wsgi_environ())
    assert harness.sender.check_reply(replayed.status, replayed.body) == "success"
    assert harness.last_record["outcome"] == "duplicate"
    assert harness.last_record["replay"] is True
    # the same event signed afresh (as a redelivery is) is a duplicate too, not a replay
    assert harness.send(EVENT).status == 200
    assert harness.last_record["outcome"] == "duplicate"
    assert "replay" not in harness.last_record
    assert calls == ["evt-42"]


def test_identical_retry_of_a_failed_request_is_allowed(make_harness):
    calls = []
    harness = make_harness(counting_router(calls, fail_times=1))
    delivery = harness.sender.build(EVENT)
    assert harness.call(delivery.wsgi_environ()).status == 500
    assert harness.call(delivery.wsgi_environ()).status == 200
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("offset_s", "status"),
    [(-301, 403), (-299, 200), (299, 200), (301, 403), (-(10**7), 403), (10**7, 403)],
    ids=["five minutes and a second old", "just inside", "just ahead", "five minutes ahead", "days old", "days ahead"],
)
def test_timestamp_tolerance(make_harness, offset_s, status):
    now = 1764300000.0
    harness = make_harness(clock=lambda: now)
    timestamp = str(int((now + offset_s) * 1000))
    reply = harness.send({"EventType": "check_url"}, timestamp=timestamp)
    assert reply.status == status
    if status == 403:
        assert reply.json["errcode"] == 900110


def test_tolerance_zero_disables_the_timestamp_check(make_harness):
    harness = make_harness(DINGTALK_TIMESTAMP_TOLERANCE_SECONDS="0")
    reply = harness.send({"EventType": "check_url"}, timestamp="1445827045067")
    assert reply.status == 200


def test_signature_is_checked_before_the_timestamp(make_harness):
    harness = make_harness()
    environ = harness.sender.build({"EventType": "check_url"}, timestamp="1").wsgi_environ()
    environ["QUERY_STRING"] = environ["QUERY_STRING"].replace("msg_signature=", "msg_signature=0")
    assert harness.call(environ).json["errcode"] in (900005, 900104)


# -- key rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "previous",
    [PREVIOUS_KEYS, {**PREVIOUS_KEYS, "DINGTALK_PREVIOUS_TOKEN": TEST_ENV["DINGTALK_TOKEN"]}],
    ids=["token and aes_key changed", "only the aes_key changed"],
)
def test_previous_pair_is_accepted_and_answered_with_that_pair(make_harness, previous):
    """DingTalk, until its console is switched, signs with the old pair and reads replies only
    with it; a rotation may also keep the token and change only the aes_key."""
    harness = make_harness(**previous)
    old = DingTalkSender(
        previous["DINGTALK_PREVIOUS_TOKEN"], previous["DINGTALK_PREVIOUS_AES_KEY"], TEST_ENV["DINGTALK_APP_KEY"]
    )
    for plaintext in (EVENT, {"EventType": "check_url"}):
        reply = harness.call(old.build(plaintext).wsgi_environ())
        assert old.check_reply(reply.status, reply.body) == "success"
    assert harness.records[0]["outcome"] == "handled"
    reply = harness.send({"EventType": "check_url"})  # the current pair still works
    assert harness.sender.check_reply(reply.status, reply.body) == "success"


def test_without_previous_keys_the_old_pair_is_refused(make_harness):
    harness = make_harness()
    old = DingTalkSender(
        PREVIOUS_KEYS["DINGTALK_PREVIOUS_TOKEN"],
        PREVIOUS_KEYS["DINGTALK_PREVIOUS_AES_KEY"],
        TEST_ENV["DINGTALK_APP_KEY"],
    )
    assert harness.call(old.build(EVENT).wsgi_environ()).status == 403


def test_half_a_previous_pair_is_a_configuration_error(make_harness):
    harness = make_harness(DINGTALK_PREVIOUS_TOKEN="previousTok3n")
    reply = harness.send({"EventType": "check_url"})
    assert reply.status == 500
    assert harness.last_record["detail"].startswith("DINGTALK_PREVIOUS_AES_KEY")


# -- the in-memory store -------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_memory_store_states_and_expiry():
    clock = Clock()
    store = MemoryStore(clock=clock)
    claim = store.claim("k", 10)
    assert claim.state == CLAIMED
    assert store.claim("k", 10).state == IN_FLIGHT
    clock.now += 11
    second = store.claim("k", 10)
    assert second.state == CLAIMED  # the first holder's lease ran out
    store.release("k", claim.token)  # a stale holder cannot release the new claim
    assert store.claim("k", 10).state == IN_FLIGHT
    store.complete("k", 60, done_by="sig-1")
    assert as_tuple(store.claim("k", 10)) == (DONE, "", "sig-1")
    clock.now += 61
    assert store.claim("k", 10).state == CLAIMED


def test_memory_store_adopts_only_with_the_holders_token():
    store = MemoryStore(clock=Clock())
    claim = store.claim("k", 10, token="task-1")
    assert claim.token == "task-1"
    assert store.claim("k", 10, token="task-1").state == IN_FLIGHT  # a second claimant, not the holder
    adopted = store.claim("k", 10, token="task-1", adopt=True)
    assert adopted.state == CLAIMED
    assert adopted.token != "task-1"  # the adopter holds it under its own token
    assert store.claim("k", 10, token="task-1", adopt=True).state == IN_FLIGHT  # a second adopter
    assert store.claim("k", 10, token="someone-else", adopt=True).state == IN_FLIGHT


def test_memory_store_is_bounded_lru():
    store = MemoryStore(max_entries=3, clock=Clock())
    for key in "abc":
        store.complete(key, 60)
    assert store.claim("a", 10).state == DONE  # touch a: b is now the oldest
    store.complete("d", 60)
    assert len(store) == 3
    assert store.claim("b", 10).state == CLAIMED  # evicted
    assert store.claim("a", 10).state == DONE


def test_memory_store_claims_are_atomic_across_threads():
    store = MemoryStore()
    for round_number in range(50):
        barrier = threading.Barrier(8)
        results = []

        def contend(key=f"key-{round_number}", barrier=barrier, results=results):
            barrier.wait()
            results.append(store.claim(key, 10).state)

        threads = [threading.Thread(target=contend) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results.count(CLAIMED) == 1


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
    harness.runtime.use_store(FlakyStore(failures=1, clock=lambda: clock[0]))
    event = {"EventType": "user_add_org", "eventId": "c-1"}
    delivery = harness.sender.build(event)
    assert harness.call(delivery.wsgi_environ()).status == 200
    clock[0] += 10_000  # long after the in-flight lease
    replay = harness.call(delivery.wsgi_environ())
    assert harness.sender.check_reply(replay.status, replay.body) == "success"
    assert harness.last_record["outcome"] == "duplicate"
    assert handler.calls == ["c-1"]
