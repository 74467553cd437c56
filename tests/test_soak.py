"""Soak: two instances over one real Redis, 5,000 events each delivered three times (one an
exact replay), handlers failing at random and Redis restarted mid-run. Afterwards every event
ran exactly once, and nothing was acknowledged that did not run."""

import collections
import contextlib
import queue
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import redis
from conftest import TEST_ENV, free_port

from dingtalk_fc import Router
from dingtalk_fc_dev.testkit import CallbackHarness

EVENTS = 5000
THREADS = 8
FAILURE_RATE = 0.05
RESTARTS = 3
REDIS_COMMAND = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always"]


class PersistentRedis:
    """redis-server with an fsync-always append-only file: a restart forgets nothing, as a
    production store must not (see the README on Redis persistence)."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="redis-soak-")
        self.port = free_port()
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [*REDIS_COMMAND, "--port", str(self.port), "--dir", self.directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)

    def close(self):
        if self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.mark.slow
def test_soak_two_instances_one_redis_restarts_and_failures():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run the tests through `make test`")
    server = PersistentRedis()
    server.start()
    chance = random.Random(9)
    chance_lock = threading.Lock()
    completed = collections.Counter()  # event key -> handler runs that returned

    def handler(event):
        with chance_lock:
            fail = chance.random() < FAILURE_RATE
        if fail:
            raise RuntimeError("downstream unavailable")
        with chance_lock:
            completed[event.key] += 1

    environ = dict(
        TEST_ENV, DINGTALK_DEDUP_REDIS_URL=f"redis://127.0.0.1:{server.port}/0", DINGTALK_DEDUP_FAIL_CLOSED="1"
    )
    instances = []
    for _ in range(2):
        router = Router()
        router.on("user_modify_org")(handler)
        instances.append(CallbackHarness(router, environ))
    sender = instances[0].sender

    work = queue.Queue()
    for number in range(EVENTS):
        event = {"EventType": "user_modify_org", "eventId": f"soak-{number}", "userId": [f"u{number}"]}
        first = sender.build(event)
        for delivery in (first, first, None):  # a push, its exact replay, a re-signed redelivery
            work.put((event, delivery))
    items = []
    while not work.empty():
        items.append(work.get())
    random.Random(3).shuffle(items)
    for item in items:
        work.put(item)

    acknowledged = set()
    statuses = collections.Counter()
    lapsed = []
    lock = threading.Lock()
    store = redis.Redis(port=server.port, socket_timeout=1)

    def let_the_lease_lapse(event_id):
        """A release lost to a Redis restart leaves the claim until its lease (15 minutes) ends,
        after which the next delivery (DingTalk's, or recovery's) runs the event. The soak cannot
        wait that long: it ends the lease, as the passing of time would."""
        name = "dingtalk-fc:" + TEST_ENV["DINGTALK_APP_KEY"] + ":" + event_id
        with contextlib.suppress(redis.RedisError):
            value = store.get(name)
            if value is not None and value.startswith(b"in_flight:"):
                store.pexpire(name, 1)
                lapsed.append(event_id)

    def deliver(event, delivery):
        conflicts = 0
        for attempt in range(300):
            if delivery is None or (attempt and chance.random() < 0.5):
                delivery = sender.build(event)  # DingTalk's retries may be re-signed or not
            instance = instances[chance.randrange(2)]
            reply = instance.call(delivery.wsgi_environ())
            errcode = reply.json.get("errcode") if reply.status != 200 else None
            with lock:
                statuses[(reply.status, errcode)] += 1
            if reply.status == 200:
                assert sender.check_reply(reply.status, reply.body) == "success"
                with lock:
                    acknowledged.add(event["eventId"])
                return
            if reply.status == 409:
                if event["eventId"] in acknowledged:
                    return  # in flight elsewhere and already acknowledged: DingTalk stops there
                conflicts += 1
                if conflicts % 50 == 0:  # a second of 409s for a handler that takes microseconds
                    let_the_lease_lapse(event["eventId"])
            time.sleep(0.02)
        raise AssertionError(f"{event['eventId']} never acknowledged")

    errors = []

    def run():
        while True:
            try:
                event, delivery = work.get_nowait()
            except queue.Empty:
                return
            try:
                deliver(event, delivery)
            except Exception as error:  # collected, re-raised below
                errors.append(error)

    def restart_redis():
        for _ in range(RESTARTS):
            time.sleep(2.0)
            server.stop()
            time.sleep(0.5)
            server.start()

    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    restarter = threading.Thread(target=restart_redis)
    for thread in [*threads, restarter]:
        thread.start()
    for thread in [*threads, restarter]:
        thread.join()
    elapsed = time.monotonic() - started
    server.close()
    for instance in instances:  # through stdout, so the leak scan reads every record
        print(instance.log.getvalue(), end="")

    assert errors == []
    keys = {f"soak-{number}" for number in range(EVENTS)}
    assert acknowledged == keys  # every event acknowledged...
    assert {key for key, runs in completed.items() if runs == 1} == keys  # ...and ran exactly once
    assert max(completed.values()) == 1
    allowed = {(200, None), (409, 900120), (503, 900132), (500, 900130)}  # 900130: the injected failures
    assert set(statuses) <= allowed, statuses
    records = [line for instance in instances for line in instance.log.getvalue().splitlines()]
    replays = sum('"replay":true' in line for line in records)
    print(
        f"\nsoak: {EVENTS} events x 3 deliveries, {sum(statuses.values())} requests in {elapsed:.1f} s "
        f"({sum(statuses.values()) / elapsed:.0f}/s) over 2 instances and {RESTARTS} Redis restarts; "
        f"statuses {dict(statuses)}; acknowledged replays {replays}; leases ended by hand {len(lapsed)}; "
        "every event ran once"
    )
