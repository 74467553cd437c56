"""The de-duplication stores: the memory store's bounds, and the Redis store against a real
redis-server (atomic claims, expiry, Redis going away)."""

import os
import signal
import threading
import time

import pytest
import redis
from conftest import TEST_ENV
from support.counting import Counter, router_for

from dingtalk_fc.dedup import CLAIMED, DONE, IN_FLIGHT, RedisStore, StoreUnavailable

EVENT = {"EventType": "user_add_org", "eventId": "redis-evt-1", "userId": ["u1"]}


def as_tuple(claim):
    return claim.state, claim.token, claim.done_by


def store_for(url, timeout_ms=200):
    return RedisStore.from_url(url, timeout_ms)


def test_claim_complete_release_cycle(redis_url):
    store = store_for(redis_url)
    claim = store.claim("k1", 10)
    assert claim.state == CLAIMED
    assert store.claim("k1", 10).state == IN_FLIGHT
    store.release("k1", "not-the-holder")
    assert store.claim("k1", 10).state == IN_FLIGHT
    store.release("k1", claim.token)
    assert store.claim("k1", 10).state == CLAIMED
    store.complete("k1", 60, done_by="signature-of-the-request")
    assert as_tuple(store.claim("k1", 10)) == (DONE, "", "signature-of-the-request")
    ttl_ms = redis.Redis.from_url(redis_url).pttl("dingtalk-fc:k1")
    assert 55_000 < ttl_ms <= 60_000


def test_claims_and_done_marks_expire(redis_url):
    store = store_for(redis_url)
    assert store.claim("lease", 0.15).state == CLAIMED
    store.complete("done", 0.15)
    assert store.claim("done", 10).state == DONE
    time.sleep(0.3)
    assert store.claim("lease", 10).state == CLAIMED
    assert store.claim("done", 10).state == CLAIMED


def test_holder_adopts_its_claim_with_its_token(redis_url):
    store = store_for(redis_url)
    claim = store.claim("renew", 10, token="task-1")
    assert store.claim("renew", 10, token="task-1").state == IN_FLIGHT  # a second claimant, not the holder
    adopted = store.claim("renew", 10, token="task-1", adopt=True)
    assert adopted.state == CLAIMED
    assert adopted.token not in ("task-1", claim.token)  # the adopter holds it under its own token
    assert store.claim("renew", 10, token="task-1", adopt=True).state == IN_FLIGHT  # a second adopter
    assert store.claim("renew", 10, token="other", adopt=True).state == IN_FLIGHT


def test_claims_are_atomic_under_contention(redis_url):
    """16 clients race for each of 100 keys: exactly one wins each key."""
    stores = [store_for(redis_url, 2000) for _ in range(16)]
    winners = {}
    lock = threading.Lock()

    def contend(store, keys, barrier):
        barrier.wait()
        for key in keys:
            if store.claim(key, 30).state == CLAIMED:
                with lock:
                    winners[key] = winners.get(key, 0) + 1

    keys = [f"race-{n}" for n in range(100)]
    barrier = threading.Barrier(len(stores))
    threads = [threading.Thread(target=contend, args=(store, keys, barrier)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert winners == {key: 1 for key in keys}


def test_store_reports_unavailable_quickly_when_redis_is_down():
    store = RedisStore.from_url("redis://127.0.0.1:1/0", 200)
    with pytest.raises(StoreUnavailable):
        store.claim("k", 10)


@pytest.fixture
def paused_redis(redis_server):
    """Stop the redis-server process (SIGSTOP): connections hang rather than being refused."""
    yield redis_server
    if redis_server.process is not None:
        redis_server.process.send_signal(signal.SIGCONT)


def redis_down(redis_server, how):
    if how == "stopped":
        redis_server.stop()
    else:
        redis_server.process.send_signal(signal.SIGSTOP)


@pytest.mark.parametrize("how", ["stopped", "hanging"])
def test_fail_open_processes_the_event_and_warns(make_harness, redis_url, paused_redis, how):
    harness = make_harness(DINGTALK_DEDUP_REDIS_URL=redis_url)
    assert harness.send({"EventType": "user_add_org", "eventId": "before", "userId": ["u0"]}).status == 200
    redis_down(paused_redis, how)
    started = time.monotonic()
    reply = harness.send(EVENT)
    elapsed = time.monotonic() - started
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    record = harness.last_record
    assert record["outcome"] == "dedup_unavailable"
    assert record["level"] == "warning"
    assert record["handled_by"] == "catalog"  # the handler ran
    assert elapsed < 1.5, "a slow Redis must not push the reply past DingTalk's deadline"


@pytest.mark.parametrize("how", ["stopped", "hanging"])
def test_fail_closed_replies_503(make_harness, redis_url, paused_redis, how):
    harness = make_harness(DINGTALK_DEDUP_REDIS_URL=redis_url, DINGTALK_DEDUP_FAIL_CLOSED="1")
    harness.runtime.start()
    redis_down(paused_redis, how)
    started = time.monotonic()
    reply = harness.send(EVENT)
    elapsed = time.monotonic() - started
    assert reply.status == 503
    assert reply.json == {"errcode": 900132, "errmsg": "deduplication store unavailable"}
    assert harness.last_record["outcome"] == "rejected"
    assert elapsed < 1.5
    assert harness.send({"EventType": "check_url"}).status == 200  # no store needed


@pytest.mark.parametrize(
    ("extra", "loaded"),
    [
        ({}, ["False", "False"]),
        ({"DINGTALK_WORKER_FUNCTION": "worker"}, ["False", "False"]),
        ({"DINGTALK_DEDUP_REDIS_URL": "redis://127.0.0.1:1/0"}, ["True", "False"]),
    ],
    ids=["defaults", "worker configured", "redis configured"],
)
def test_optional_clients_stay_off_the_cold_start(extra, loaded):
    """redis only when configured; fc2 only at the first deferral, even with a worker configured."""
    import subprocess
    import sys

    from conftest import ROOT, TESTS

    code = (
        "import sys; from support import product_router; from dingtalk_fc.runtime import Runtime; "
        "Runtime(product_router.router).start(); "
        "print('redis' in sys.modules, 'fc2' in sys.modules)"
    )
    env = {**os.environ, **TEST_ENV, **extra, "PYTHONPATH": TESTS}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.split() == loaded, result.stderr


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


def test_an_id_with_a_lone_surrogate_is_claimed_in_redis(make_harness, redis_url):
    handler = Counter()
    harness = make_harness(router_for(handler), DINGTALK_DEDUP_REDIS_URL=redis_url)
    plaintext = '{"EventType":"user_add_org","eventId":"e-\\ud83d-1","userId":["u1"]}'
    statuses = [harness.send(plaintext).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert [r["outcome"] for r in harness.records] == ["handled", "duplicate", "duplicate"]
    assert len(handler.calls) == 1
