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
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from Crypto.Cipher import AES  # noqa: E402

from dingtalk_fc_dev.testkit import DingTalkSender, call_wsgi  # noqa: E402

ENVIRONMENT = {
    "DINGTALK_TOKEN": "benchToken",
    "DINGTALK_AES_KEY": "q7JbXwJ4m2Zk9sPcVdT0fR8nLgYhE3uA6iOoKl1MxN5",
    "DINGTALK_APP_KEY": "dingbenchappkey00001",
    "DINGTALK_TIMESTAMP_TOLERANCE_SECONDS": "0",  # the same signed requests are replayed below
    # Deferral configured, as template.yml does, and not used: a team's deferred routes (the cold
    # starts import its handlers.py) need a worker to start, and a configured one costs nothing.
    "DINGTALK_WORKER_FUNCTION": "worker",
}
# The warm and memory measures run the product's pipeline over this router, not a team's
# handlers.py: one handler that returns a field for its record, as a handler would.
BENCH_ROUTER = """
from dingtalk_fc import Router, http_fc2
from dingtalk_fc.runtime import Runtime
router = Router()
router.on("user_modify_org")(lambda event: dict(synced=1))
"""
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


def paired_ratio(measured: List[float], baseline: List[float]) -> float:
    """Median of per-round ratios: each pair was sampled back to back, so shares the machine's
    momentary speed, which on a shared machine moves more than the difference being measured."""
    return statistics.median(m / b for m, b in zip(measured, baseline))


def summary(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": statistics.median(ordered), "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


CASES = ("check_url", "event_1kb")


def prepare(case: str, size: int) -> "Tuple[Callable[[], Any], Callable[[], Any], Set[int]]":
    """``(full request, baseline bare, statuses seen)`` callables for one case.

    check_url is answered without the store: one signed request, sent again and again. Events
    are distinct (a repeated one would be a refused replay): each is claimed, handled, marked
    done in the memory store and logged, as in production; ``size`` of them are prepared.
    """
    from dingtalk_fc.records import RecordWriter

    bench = {}  # type: Dict[str, Any]
    exec(BENCH_ROUTER, bench)  # the same definition the memory measure runs in its own process
    sink = open(os.devnull, "w")  # noqa: SIM115 - kept open for the whole run
    runtime = bench["Runtime"](bench["router"], environ=dict(ENVIRONMENT), records=RecordWriter(sink))
    runtime.start()

    def handler(environ: Dict[str, Any], start_response: Any) -> Any:
        return bench["http_fc2"].serve(runtime, environ, start_response)

    sender = DingTalkSender(*list(ENVIRONMENT.values())[:3])
    baseline = StraightforwardBaseline(*list(ENVIRONMENT.values())[:3])
    if case == "check_url":
        plaintexts = ['{"EventType":"check_url"}']
    else:
        plaintexts = [event_of_about(1024, number) for number in range(size)]
    deliveries = [sender.build(plaintext) for plaintext in plaintexts]
    encrypts = [json.loads(delivery.body)["encrypt"] for delivery in deliveries]
    environs = [delivery.wsgi_environ() for delivery in deliveries]
    position = {"full": 0, "bare": 0}
    statuses = set()  # type: Set[int]

    def request() -> bytes:
        index_ = position["full"] % len(environs)
        position["full"] += 1
        environ = environs[index_]
        environ["wsgi.input"] = io.BytesIO(deliveries[index_].body)
        status, _, reply = call_wsgi(handler, environ)
        statuses.add(status)
        return reply

    def bare() -> bytes:
        index_ = position["bare"] % len(encrypts)
        position["bare"] += 1
        return baseline.bare(encrypts[index_])

    assert baseline.decrypt(encrypts[0]) == plaintexts[0]
    return request, bare, statuses


def warm(repeat: int) -> Dict[str, Any]:
    """Full WSGI requests through the pipeline (the log line written to /dev/null) against the
    baseline's bare decrypt + reply, sampled alternately."""
    results = {}
    warmup = min(repeat, 200)
    for case in CASES:
        request, bare, statuses = prepare(case, warmup + repeat + BATCH)
        for _ in range(warmup):
            request()
            bare()
        full_samples, bare_samples = interleaved([request, bare], repeat)
        assert statuses == {200}, statuses  # every request was a success, none a refusal
        results[case] = {
            "full_request": summary(full_samples),
            "baseline_bare": summary(bare_samples),
            "ratio": paired_ratio(full_samples, bare_samples),
        }
    return results


def callgrind_instructions(arguments: List[str]) -> int:
    """Instructions a Python run executes, counted by valgrind: repeatable on a noisy machine."""
    env = {**os.environ, **ENVIRONMENT}
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(re.search(r"Collected : (\d+)", result.stderr).group(1))


def instructions(requests: int) -> Dict[str, Any]:
    """Per-request instructions (the difference of a run of 5n and of n requests, over 4n), and
    process start to first reply, both under callgrind: figures that noise does not move."""
    results = {}  # type: Dict[str, Any]
    for case in CASES:
        per_call = {}
        for kind in ("full", "bare"):
            runs = [
                callgrind_instructions([__file__, "--count", case, kind, str(count), str(5 * requests)])
                for count in (requests, 5 * requests)
            ]
            per_call[kind] = (runs[1] - runs[0]) / (4 * requests)
        results[case] = {**per_call, "ratio": per_call["full"] / per_call["bare"]}
    code = COLD.format(
        token=ENVIRONMENT["DINGTALK_TOKEN"], aes=ENVIRONMENT["DINGTALK_AES_KEY"], owner=ENVIRONMENT["DINGTALK_APP_KEY"]
    )
    cold_start = {
        name: callgrind_instructions(["-c", source])
        for name, source in (("floor", FLOOR), ("floor_with_protocol", FLOOR_WITH_PROTOCOL), ("first_reply", code))
    }
    cold_start["ratio"] = cold_start["first_reply"] / cold_start["floor"]
    cold_start["ratio_to_protocol_floor"] = cold_start["first_reply"] / cold_start["floor_with_protocol"]
    results["cold"] = cold_start
    return results


def count_worker(case: str, kind: str, count: int, size: int) -> None:
    """Run ``count`` calls for :func:`instructions`; ``size`` keeps the set-up equal across runs."""
    request, bare, statuses = prepare(case, size)
    call = request if kind == "full" else bare
    for _ in range(count):
        call()
    assert statuses <= {200}, statuses


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
    result["ratio"] = paired_ratio(samples["first_reply"], samples["floor"])
    result["ratio_to_protocol_floor"] = paired_ratio(samples["first_reply"], samples["floor_with_protocol"])
    return result


COLD_FC3 = """
import json
import index
class Namespace:
    def __init__(self, **fields): self.__dict__.update(fields)
context = Namespace(request_id="1-bench", account_id="1234567890", region="cn-hangzhou",
                    credentials=Namespace(access_key_id="id", access_key_secret="secret", security_token="token"))
index.initializer(context)
from dingtalk_crypto import DingTalkCrypto
c = DingTalkCrypto({token!r}, {aes!r}, {owner!r})
e = c.encrypt('{{"EventType":"check_url"}}')
t, n = c.timestamp_ms(), "coldnonc"
query = {{"msg_signature": c.signature(t, n, e), "timestamp": t, "nonce": n}}
event = json.dumps({{"version": "v1", "rawPath": "/", "body": json.dumps({{"encrypt": e}}), "isBase64Encoded": False,
                    "headers": {{}}, "queryParameters": query,
                    "requestContext": {{"http": {{"method": "POST", "path": "/"}}, "requestId": "1-bench"}}}}).encode()
assert index.fc3_handler(event, context)["statusCode"] == 200
"""


def cold_fc3(runs: int) -> Dict[str, Any]:
    """The python3.10 package (``make package``, bytecode included) under Python 3.10 through
    ``index.fc3_handler``, with deferral to FC 3.0 configured but not used, against the floor
    of the same interpreter (pycryptodome's AES from the package). Empty without Python 3.10."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from package import build, find_interpreter

    python = find_interpreter("3.10")
    if python is None:
        return {}
    code = COLD_FC3.format(
        token=ENVIRONMENT["DINGTALK_TOKEN"], aes=ENVIRONMENT["DINGTALK_AES_KEY"], owner=ENVIRONMENT["DINGTALK_APP_KEY"]
    )
    with tempfile.TemporaryDirectory(prefix="bench-package-") as scratch:
        package = build("python3.10", os.path.join(scratch, "python3.10"))
        env = {
            **os.environ,
            **ENVIRONMENT,
            "PYTHONPATH": package,
            "PYTHONDONTWRITEBYTECODE": "1",  # FC's code directory is read-only
            "DINGTALK_FC_VERSION": "3.0",
            "DINGTALK_WORKER_FUNCTION": "worker",
            "DINGTALK_FC_ENDPOINT": "http://127.0.0.1:9",
        }
        samples = {"floor": [], "first_reply": []}  # type: Dict[str, List[float]]
        for _ in range(runs):
            for name, source in (("floor", FLOOR), ("first_reply", code)):
                started = time.perf_counter()
                subprocess.run([python, "-c", source], cwd=scratch, env=env, check=True, stdout=subprocess.DEVNULL)
                samples[name].append(time.perf_counter() - started)
    result = {name + "_ms": statistics.median(values) * 1000 for name, values in samples.items()}
    result["ratio"] = paired_ratio(samples["first_reply"], samples["floor"])
    return result


# Peak RSS from /proc (VmHWM): getrusage's ru_maxrss survives execve on Linux, so a child
# started by a large parent would report the parent's size.
PEAK_RSS = """
def PEAK_RSS_KIB():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""

MEMORY = (
    PEAK_RSS
    + """
import io, json, os, sys
from dingtalk_crypto import DingTalkCrypto
from dingtalk_fc.records import RecordWriter
"""
    + BENCH_ROUTER
    + """
runtime = Runtime(router, records=RecordWriter(open(os.devnull, "w")))
dingtalk = DingTalkCrypto({token!r}, {aes!r}, {owner!r})  # the sending side, deployed code only
for n in range({count}):
    plaintext = '{{"EventType":"check_url"}}' if n % 10 == 0 else {event!r}.replace("bench-0", "bench-%d" % n)
    encrypt, timestamp, nonce = dingtalk.encrypt(plaintext), dingtalk.timestamp_ms(), dingtalk.new_nonce()
    query = "msg_signature=%s&timestamp=%s&nonce=%s" % (dingtalk.signature(timestamp, nonce, encrypt), timestamp, nonce)
    body = json.dumps({{"encrypt": encrypt}}).encode()
    environ = {{"REQUEST_METHOD": "POST", "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}}
    status = []
    b"".join(http_fc2.serve(runtime, environ, lambda s, h: status.append(s)))
    assert status == ["200 OK"], status
print(PEAK_RSS_KIB())
"""
)


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
        [sys.executable, "-c", FLOOR + "\n" + PEAK_RSS + "\nprint(PEAK_RSS_KIB())"],
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
    parser.add_argument("--instruction-requests", type=int, default=300, help="0 skips the callgrind counts")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench-results.json"))
    parser.add_argument("--count", nargs=4, metavar=("CASE", "KIND", "N", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count:  # a run under callgrind, started by instructions()
        count_worker(args.count[0], args.count[1], int(args.count[2]), int(args.count[3]))
        return 0

    results = {
        "python": sys.version.split()[0],
        "warm": warm(args.repeat),
        "cold": cold(args.cold_runs),
        "cold_fc3": cold_fc3(args.cold_runs),
        "memory": memory(args.memory_requests),
    }
    if args.instruction_requests and shutil.which("valgrind"):
        results["instructions"] = instructions(args.instruction_requests)
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
    fc3 = results["cold_fc3"]
    if fc3:
        print(
            f"{'cold, python3.10 package via fc3_handler (ms)':44} {fc3['first_reply_ms']:12.1f} "
            f"{fc3['floor_ms']:12.1f} {fc3['ratio']:7.2f} {TARGETS['cold_ratio']:8.2f}"
        )
    else:
        print("cold, python3.10 package via fc3_handler: no Python 3.10 here, not measured")
    mem = results["memory"]
    print(
        f"{'peak RSS after ' + str(mem['requests']) + ' requests (MiB)':44} {mem['peak_rss_mib']:12.1f} "
        f"{mem['floor_rss_mib']:12.1f} {'':7} {TARGETS['peak_rss_mib']:8.1f}"
    )
    counted = results.get("instructions")
    if counted:
        for name in CASES:
            print(
                f"{'instructions per ' + name + ' request':44} {counted[name]['full']:12.0f} "
                f"{counted[name]['bare']:12.0f} {counted[name]['ratio']:7.2f} {TARGETS['warm_ratio']:8.2f}"
            )
        print(
            f"{'instructions, start to first reply':44} {counted['cold']['first_reply']:12.0f} "
            f"{counted['cold']['floor']:12.0f} {counted['cold']['ratio']:7.2f} {TARGETS['cold_ratio']:8.2f}"
        )
        print(
            f"{'  against floor + hmac + CBC mode':44} {counted['cold']['first_reply']:12.0f} "
            f"{counted['cold']['floor_with_protocol']:12.0f} {counted['cold']['ratio_to_protocol_floor']:7.2f}"
        )
    results["targets_met"] = {
        "warm": all(case["ratio"] <= TARGETS["warm_ratio"] for case in results["warm"].values()),
        "cold": cold_result["ratio"] <= TARGETS["cold_ratio"],
        "memory": mem["peak_rss_mib"] <= TARGETS["peak_rss_mib"],
    }
    if fc3:
        results["targets_met"]["cold_fc3"] = fc3["ratio"] <= TARGETS["cold_ratio"]
    print("targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results["targets_met"].items()))
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(results, out, indent=2)
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
