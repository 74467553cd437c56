"""One time budget per request: a trickling FC, a hanging Redis, a name that does not resolve
and a slow completion all stay inside DingTalk's 1500 ms."""

import socket
import time

from support.counting import APPROVAL, Counter, router_for

from dingtalk_fc.dedup import MemoryStore


def timed_send(harness, plaintext):
    started = time.monotonic()
    reply = harness.send(plaintext)
    return reply, time.monotonic() - started


def test_a_trickling_fc_answer_is_bounded_by_the_budget(deferred_approval):
    harness, stub = deferred_approval(Counter(), DINGTALK_REQUEST_BUDGET_MS="400")
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
    harness.runtime.use_store(SlowStore(claim_s=1.19))
    reply, elapsed = timed_send(harness, {"EventType": "user_add_org", "eventId": "slow-store-1"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert "complete failed" in harness.last_record["store_warning"]
    assert elapsed < 1.5
