"""Events recovered per second through the pipeline, memory store and Redis (prints figures).

    .venv/bin/python tools/bench_recovery.py [--events 2000] [--redis redis://127.0.0.1:6379/0]

The failed list is served by tests/stubs/dingtalk_api.py on loopback (v1 API, 100 per page); the
handler does nothing, so the figure is recovery's own cost: paging, parsing, sealing the journal
line, claiming and completing the key, and two log records per event (written to /dev/null).
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from conftest import APP_SECRET, TEST_ENV  # noqa: E402
from stubs.dingtalk_api import DingTalkApiStub, v1_item  # noqa: E402

from dingtalk_fc import Router, recovery  # noqa: E402
from dingtalk_fc.records import RecordWriter  # noqa: E402
from dingtalk_fc.runtime import Runtime  # noqa: E402
from dingtalk_fc_dev.testkit import FakeFcContext  # noqa: E402


def measure(events: int, redis_url: str) -> float:
    stub = DingTalkApiStub(TEST_ENV["DINGTALK_APP_KEY"], APP_SECRET)
    router = Router()
    router.on("user_add_org")(lambda event: None)
    environ = {
        **TEST_ENV,
        "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_API_BASE": stub.base,
        "DINGTALK_RECOVERY_API": "v1",
        "DINGTALK_DEDUP_MEMORY_ENTRIES": str(events * 2),
    }
    if redis_url:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        environ["DINGTALK_DEDUP_REDIS_URL"] = redis_url
    with open(os.devnull, "w") as sink:
        runtime = Runtime(router, environ=environ, records=RecordWriter(sink))
        stub.add(
            *(v1_item({"EventType": "user_add_org", "eventId": f"b{n}", "userId": [f"u{n}"]}) for n in range(events))
        )
        context = FakeFcContext(function="recover")
        context.function.timeout = 600
        started = time.perf_counter()
        summary = recovery.recover(runtime, "bench", context)
        elapsed = time.perf_counter() - started
    stub.close()
    assert summary["handled"] == events, summary
    return events / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--redis", default="", help="a redis:// URL (its database is flushed)")
    args = parser.parse_args()
    stores = [("memory store", "")] + ([("redis store", args.redis)] if args.redis else [])
    for name, url in stores:
        print(f"{name}: {measure(args.events, url):,.0f} events recovered per second ({args.events} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
