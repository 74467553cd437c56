"""Two `make run`-style server processes sharing one Redis: 2,000 events, each delivered twice,
to different instances, concurrently from 8 client threads. Each handler runs exactly once."""

import collections
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import TEST_ENV

from dingtalk_fc_dev.testkit import DingTalkSender

EVENTS = 2000
CLIENT_THREADS = 8
MAX_ATTEMPTS = 20


def test_two_instances_share_one_redis(start_server, redis_url):
    servers = [start_server(DINGTALK_DEDUP_REDIS_URL=redis_url) for _ in range(2)]
    sender = DingTalkSender(*TEST_ENV.values())
    statuses = collections.Counter()
    latencies = []
    lock = threading.Lock()

    def deliver(event_number, instance):
        """One delivery, retried like DingTalk would retry a 409 (another instance has it in flight)."""
        plaintext = {"EventType": "user_add_org", "eventId": f"multi-{event_number}", "userId": [f"u{event_number}"]}
        for _attempt in range(MAX_ATTEMPTS):
            result = sender.post(servers[instance].url, sender.build(plaintext), timeout_s=30)
            with lock:
                statuses[result.status] += 1
                latencies.append(result.latency_ms)
            if result.status != 409:
                return sender.check_reply(result.status, result.body)
            time.sleep(0.01)
        raise AssertionError(f"event {event_number} still in flight after {MAX_ATTEMPTS} attempts")

    jobs = [(n, copy) for n in range(EVENTS) for copy in (0, 1)]  # copy 0 to one instance, copy 1 to the other
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        replies = list(pool.map(lambda job: deliver(job[0], (job[0] + job[1]) % 2), jobs))
    elapsed = time.perf_counter() - started

    assert replies == ["success"] * len(jobs)
    records = [r for server in servers for r in server.records() if r.get("event_type") == "user_add_org"]
    handled = collections.Counter(r["event_id"] for r in records if r["outcome"] == "handled")
    outcomes = collections.Counter(r["outcome"] for r in records)
    per_instance = [sum(1 for r in s.records() if r.get("outcome") == "handled") for s in servers]
    assert len(handled) == EVENTS
    assert set(handled.values()) == {1}, "a handler ran twice"
    assert not [code for code in statuses if code >= 500]
    assert all(count > 0 for count in per_instance)
    latencies.sort()
    print(
        f"\nmulti-instance: {len(jobs)} deliveries of {EVENTS} events over 2 instances + Redis, "
        f"{CLIENT_THREADS} threads, {elapsed:.1f} s ({len(latencies) / elapsed:.0f} req/s); "
        f"HTTP {dict(statuses)}; outcomes {dict(outcomes)}; handled per instance {per_instance}; "
        f"latency p50 {statistics.median(latencies):.1f} ms, p99 {latencies[int(len(latencies) * 0.99)]:.1f} ms"
    )
