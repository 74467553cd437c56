"""Regenerate ``events/``: signed request samples for `fun local` / `s local` and for replay.

    python tools/make_events.py            # writes events/
    python tools/make_events.py --check    # exit 1 if events/ is out of date

Deterministic: the demo keys of ``make run``, a fixed timestamp, nonce and random prefix.
The timestamp is in the past: `replay` re-signs them with the current time; sent as they are,
the function must run with DINGTALK_TIMESTAMP_TOLERANCE_SECONDS=0 (see events/README.md).
"""

import argparse
import json
import os
import sys
from typing import Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dingtalk_crypto import DingTalkCrypto  # noqa: E402
from dingtalk_fc.jobs import JobSealer  # noqa: E402
from dingtalk_fc_dev import catalog  # noqa: E402
from dingtalk_fc_dev.demo import DEMO_ENVIRONMENT  # noqa: E402
from dingtalk_fc_dev.testkit import DingTalkSender  # noqa: E402

TIMESTAMP, NONCE, PREFIX = "1764300000000", "a1b2c3d4", b"eventsamples0000"
EVENTS_DIR = os.path.join(ROOT, "events")


def render() -> Dict[str, str]:
    sender = DingTalkSender.from_environment(DEMO_ENVIRONMENT)
    lines = []
    for event_type in catalog.event_types():
        delivery = sender.build(catalog.sample(event_type), timestamp=TIMESTAMP, nonce=NONCE, random_prefix=PREFIX)
        lines.append(json.dumps({"event_type": event_type, "query": delivery.query, "body": delivery.body.decode()}))
    check_url = sender.build({"EventType": "check_url"}, timestamp=TIMESTAMP, nonce=NONCE, random_prefix=PREFIX)
    fc3_event = {
        "version": "v1",
        "rawPath": "/",
        "body": check_url.body.decode(),
        "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"},
        "queryParameters": check_url.params,
        "requestContext": {"http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1"}, "requestId": "local"},
    }
    fixed = DingTalkCrypto(
        DEMO_ENVIRONMENT["DINGTALK_TOKEN"],
        DEMO_ENVIRONMENT["DINGTALK_AES_KEY"],
        DEMO_ENVIRONMENT["DINGTALK_APP_KEY"],
        random_bytes=lambda size: PREFIX[:size],
    )
    jobs = JobSealer([fixed], clock=lambda: int(TIMESTAMP) / 1000)
    worker_job = jobs.seal(json.dumps(catalog.sample("bpms_instance_change")), "push", "local")
    return {
        "deliveries.jsonl": "\n".join(lines) + "\n",
        "fc3-http-check_url.json": json.dumps(fc3_event, indent=2) + "\n",
        "worker-bpms_instance_change.json": json.dumps(json.loads(worker_job), indent=2) + "\n",
        "check_url.query": check_url.query + "\n",
        "check_url.body.json": check_url.body.decode() + "\n",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for name, content in render().items():
        path = os.path.join(EVENTS_DIR, name)
        if args.check:
            with open(path, encoding="utf-8") as current:
                if current.read() != content:
                    stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as out:
                out.write(content)
    if stale:
        print("out of date: " + ", ".join(stale) + " (run python tools/make_events.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
