"""``make bench``: warm request latency, cold start and peak memory, with same-run baselines.

Prints a table and writes JSON (``--json``, default bench-results.json). Targets (issue #4):
warm full request <= 1.5x the straightforward baseline's bare decrypt+reply; cold start <= 1.15x
the floor ``import json, logging; from Crypto.Cipher import AES``; peak RSS <= 30 MiB after
10,000 requests. Figures are medians over repeated runs on this (shared, noisy) machine.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from Crypto.Cipher import AES  # noqa: E402

from dingtalk_fc_dev.testkit import DingTalkSender, call_wsgi  # noqa: E402

ENVIRONMENT = {
    "DINGTALK_TOKEN": "benchToken",
    "DINGTALK_AES_KEY": "q7JbXwJ4m2Zk9sPcVdT0fR8nLgYhE3uA6iOoKl1MxN5",
    "DINGTALK_APP_KEY": "dingbenchappkey00001",
    "DINGTALK_TIMESTAMP_TOLERANCE_SECONDS": "0",  # the same signed requests are replayed below
}
TARGETS = {"warm_ratio": 1.5, "cold_ratio": 1.15, "peak_rss_mib": 30.0}
FLOOR = "import json, logging; from Crypto.Cipher import AES"
FLOOR_WITH_PROTOCOL = FLOOR + "; import hmac, hashlib; AES.new(bytes(32), AES.MODE_CBC, bytes(16))"


def event_of_about(size: int, number: int = 0) -> str:
    base = {
        "EventType": "user_modify_org",
        "eventId": f"bench-{number}",
        "CorpId": "dingbenchcorp",
        "userId": ["015xxxx227"],
        "optStaffId": "manager4021",
        "note": "",
    }
    base["note"] = "x" * max(0, size - len(json.dumps(base)))
    return json.dumps(base)


class StraightforwardBaseline:
    """What DingTalk's samples do: a new AES.new(..., MODE_CBC) per decrypt and per encrypt."""

    def __init__(self, token: str, aes_key: str, owner_key: str) -> None:
        self.token, self.owner_key = token, owner_key.encode()
        self.key = base64.b64decode(aes_key + "=")

    def decrypt(self, encrypt: str) -> str:
        raw = AES.new(self.key, AES.MODE_CBC, self.key[:16]).decrypt(base64.b64decode(encrypt))
        raw = raw[: -raw[-1]]
        (length,) = struct.unpack(">I", raw[16:20])
        return raw[20 : 20 + length].decode()

    def reply(self) -> Dict[str, str]:
        message = b"success"
        body = os.urandom(16) + struct.pack(">I", len(message)) + message + self.owner_key
        pad = 32 - len(body) % 32
        encrypt = base64.b64encode(
            AES.new(self.key, AES.MODE_CBC, self.key[:16]).encrypt(body + bytes([pad]) * pad)
        ).decode()
        timestamp, nonce = str(int(time.time() * 1000)), "benchnon"
        signature = hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypt])).encode()).hexdigest()
        return {"msg_signature": signature, "timeStamp": timestamp, "nonce": nonce, "encrypt": encrypt}

    def bare(self, encrypt: str) -> bytes:
        self.decrypt(encrypt)
        return json.dumps(self.reply()).encode()


BATCH = 20  # calls per sample: keeps the timer's own cost out of the figures


def interleaved(functions: List[Callable[[], Any]], repeat: int) -> List[List[float]]:
    """Per-call microseconds for each function, sampled alternately so they share the noise."""
    samples = [[] for _ in functions]  # type: List[List[float]]
    for _ in range(max(1, repeat // BATCH)):
        for function, out in zip(functions, samples):
            started = time.perf_counter()
            for _ in range(BATCH):
                function()
            out.append((time.perf_counter() - started) * 1e6 / BATCH)
    return samples


def summary(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": statistics.median(ordered), "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def warm(repeat: int) -> Dict[str, Any]:
    """Full WSGI requests through index.handler, the log line written to /dev/null."""
    os.environ.update(ENVIRONMENT)
    import index
    from dingtalk_fc.records import RecordWriter

    sink = open(os.devnull, "w")  # noqa: SIM115 - kept open for the whole run
    index.runtime._records = RecordWriter(sink)
    index.runtime.start()
    index.runtime.pipeline._records = RecordWriter(sink)
    sender = DingTalkSender(*list(ENVIRONMENT.values())[:3])
    baseline = StraightforwardBaseline(*list(ENVIRONMENT.values())[:3])
    results = {}
    for name, plaintext in (("check_url", '{"EventType":"check_url"}'), ("event_1kb", event_of_about(1024))):
        delivery = sender.build(plaintext)
        environ = delivery.wsgi_environ()
        body = delivery.body

        def request(environ=environ, body=body):
            environ["wsgi.input"] = io.BytesIO(body)
            return call_wsgi(index.handler, environ)

        status, _, reply = request()
        assert sender.check_reply(status, reply) == "success", reply
        encrypt = json.loads(body)["encrypt"]
        assert baseline.decrypt(encrypt) == plaintext
        for _ in range(min(repeat, 200)):  # warm up both
            request()
            baseline.bare(encrypt)
        full_samples, bare_samples = interleaved([request, lambda encrypt=encrypt: baseline.bare(encrypt)], repeat)
        full, bare = summary(full_samples), summary(bare_samples)
        results[name] = {"full_request": full, "baseline_bare": bare, "ratio": full["median_us"] / bare["median_us"]}
    return results


def process_seconds(code: str, runs: int, write_bytecode: bool = False) -> List[float]:
    env = {**os.environ, **ENVIRONMENT}
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - started)
    return samples


COLD = """
import io, json
import index
index.initializer(None)
from dingtalk_crypto import DingTalkCrypto
c = DingTalkCrypto({token!r}, {aes!r}, {owner!r})
e = c.encrypt('{{"EventType":"check_url"}}')
t, n = c.timestamp_ms(), "coldnonc"
q = "msg_signature=" + c.signature(t, n, e) + "&timestamp=" + t + "&nonce=" + n
b = json.dumps({{"encrypt": e}}).encode()
out = index.handler({{"REQUEST_METHOD": "POST", "QUERY_STRING": q, "CONTENT_LENGTH": str(len(b)),
                     "wsgi.input": io.BytesIO(b)}}, lambda s, h: None)
assert b"msg_signature" in b"".join(out)
"""


def cold(runs: int) -> Dict[str, Any]:
    """Process start to first check_url reply, against the floor, alternating to share noise.

    Measured with bytecode present, as in a package built by ``make package`` (FC's code
    directory is read-only: without shipped bytecode every cold start compiles the modules,
    measured too), and against a second floor that adds what the protocol itself needs from
    the standard library and pycryptodome (hmac and hashlib, the CBC mode).
    """
    code = COLD.format(
        token=ENVIRONMENT["DINGTALK_TOKEN"], aes=ENVIRONMENT["DINGTALK_AES_KEY"], owner=ENVIRONMENT["DINGTALK_APP_KEY"]
    )
    for cache in (os.path.join(ROOT, "__pycache__"), os.path.join(ROOT, "dingtalk_fc", "__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)  # the deployed modules' bytecode
    samples = {"first_reply_no_bytecode": process_seconds(code, runs)}
    process_seconds(code, 1, write_bytecode=True)
    samples.update(floor=[], floor_with_protocol=[], first_reply=[])
    for _ in range(runs):
        samples["floor"] += process_seconds(FLOOR, 1)
        samples["floor_with_protocol"] += process_seconds(FLOOR_WITH_PROTOCOL, 1)
        samples["first_reply"] += process_seconds(code, 1)
    result = {name + "_ms": statistics.median(values) * 1000 for name, values in samples.items()}
    result["ratio"] = result["first_reply_ms"] / result["floor_ms"]
    result["ratio_to_protocol_floor"] = result["first_reply_ms"] / result["floor_with_protocol_ms"]
    return result


MEMORY = """
import io, json, os, resource, sys
import index
from dingtalk_fc.records import RecordWriter
from dingtalk_fc_dev.testkit import DingTalkSender
index.runtime._records = RecordWriter(open(os.devnull, "w"))
sender = DingTalkSender({token!r}, {aes!r}, {owner!r})
for n in range({count}):
    plaintext = '{{"EventType":"check_url"}}' if n % 10 == 0 else {event!r}.replace("bench-0", "bench-%d" % n)
    environ = sender.build(plaintext).wsgi_environ()
    status = []
    b"".join(index.handler(environ, lambda s, h: status.append(s)))
    assert status == ["200 OK"], status
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory(count: int) -> Dict[str, Any]:
    code = MEMORY.format(
        token=ENVIRONMENT["DINGTALK_TOKEN"],
        aes=ENVIRONMENT["DINGTALK_AES_KEY"],
        owner=ENVIRONMENT["DINGTALK_APP_KEY"],
        count=count,
        event=event_of_about(1024),
    )
    env = {**os.environ, **ENVIRONMENT}
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    floor = subprocess.run(
        [sys.executable, "-c", FLOOR + "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return {
        "requests": count,
        "peak_rss_mib": int(output.stdout.split()[-1]) / 1024,
        "floor_rss_mib": int(floor.stdout.split()[-1]) / 1024,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5000, help="warm requests per case")
    parser.add_argument("--cold-runs", type=int, default=30)
    parser.add_argument("--memory-requests", type=int, default=10000)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench-results.json"))
    args = parser.parse_args(argv)

    results = {
        "python": sys.version.split()[0],
        "warm": warm(args.repeat),
        "cold": cold(args.cold_runs),
        "memory": memory(args.memory_requests),
    }
    print(f"{'measure':44} {'value':>12} {'baseline':>12} {'ratio':>7} {'target':>8}")
    for name, case in results["warm"].items():
        full, bare = case["full_request"], case["baseline_bare"]
        print(
            f"{'warm ' + name + ' full request, median (us)':44} {full['median_us']:12.1f} {bare['median_us']:12.1f} "
            f"{case['ratio']:7.2f} {TARGETS['warm_ratio']:8.2f}"
        )
        print(f"{'warm ' + name + ' full request, p99 (us)':44} {full['p99_us']:12.1f} {bare['p99_us']:12.1f}")
    cold_result = results["cold"]
    print(
        f"{'cold start to first check_url reply (ms)':44} {cold_result['first_reply_ms']:12.1f} "
        f"{cold_result['floor_ms']:12.1f} {cold_result['ratio']:7.2f} {TARGETS['cold_ratio']:8.2f}"
    )
    print(
        f"{'  against floor + hmac + CBC mode (ms)':44} {cold_result['first_reply_ms']:12.1f} "
        f"{cold_result['floor_with_protocol_ms']:12.1f} {cold_result['ratio_to_protocol_floor']:7.2f}"
    )
    print(f"{'  without bytecode, compiled at start (ms)':44} {cold_result['first_reply_no_bytecode_ms']:12.1f}")
    mem = results["memory"]
    print(
        f"{'peak RSS after ' + str(mem['requests']) + ' requests (MiB)':44} {mem['peak_rss_mib']:12.1f} "
        f"{mem['floor_rss_mib']:12.1f} {'':7} {TARGETS['peak_rss_mib']:8.1f}"
    )
    results["targets_met"] = {
        "warm": all(case["ratio"] <= TARGETS["warm_ratio"] for case in results["warm"].values()),
        "cold": cold_result["ratio"] <= TARGETS["cold_ratio"],
        "memory": mem["peak_rss_mib"] <= TARGETS["peak_rss_mib"],
    }
    print("targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results["targets_met"].items()))
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(results, out, indent=2)
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
