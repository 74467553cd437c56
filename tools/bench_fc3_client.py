"""What the FC 3.0 deferral costs an instance the first time: this project's own ACS3 client
against Aliyun's SDK (``alibabacloud_fc20230330``), each in a fresh interpreter.

    .venv/bin/python tools/bench_fc3_client.py [--runs 7]

Each run imports the client (after the pipeline, as at the first deferred event) and sends one
asynchronous invocation to a local server that answers 202. Prints the medians in ms.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = """
import json, sys, time
sys.path.insert(0, {root!r})
import dingtalk_fc.callback
endpoint, payload = {endpoint!r}, b'{{"key": "k", "encrypt": "x"}}'
"""
OWN = """
started = time.perf_counter()
from dingtalk_fc import defer_fc3
imported = time.perf_counter()
path, headers = defer_fc3.invocation_request(endpoint, "worker", "dingtalk-1", payload, ("id", "secret", "token"))
status, _ = defer_fc3.post(endpoint, path, headers, payload, 1.0)
"""
SDK = """
started = time.perf_counter()
from alibabacloud_fc20230330 import models
from alibabacloud_fc20230330.client import Client
from alibabacloud_tea_openapi.models import Config
from darabonba.runtime import RuntimeOptions
imported = time.perf_counter()
config = Config(access_key_id="id", access_key_secret="secret", security_token="token",
                endpoint=endpoint.split("://")[1], protocol="http")
headers = models.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_async_task_id="dingtalk-1")
runtime = RuntimeOptions(autoretry=False, connect_timeout=1000, read_timeout=1000)
status = Client(config).invoke_function_with_options(
    "worker", models.InvokeFunctionRequest(body=payload), headers, runtime).status_code
"""
REPORT = """
done = time.perf_counter()
assert status == 202, status
print(json.dumps({"import_ms": (imported - started) * 1000, "first_call_ms": (done - imported) * 1000,
                  "modules": len(sys.modules)}))
"""


class Accept(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def measure(client: str, endpoint: str, runs: int) -> Dict[str, float]:
    code = COMMON.format(root=ROOT, endpoint=endpoint) + client + REPORT
    samples = []  # type: List[Dict[str, float]]
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        samples.append(json.loads(result.stdout))
    return {name: statistics.median(sample[name] for sample in samples) for name in samples[0]}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        figures = {"own client": measure(OWN, endpoint, args.runs), "Aliyun SDK": measure(SDK, endpoint, args.runs)}
    finally:
        server.shutdown()
    title = f"first FC 3.0 deferral, median of {args.runs}"
    print(f"{title:<36} {'import ms':>10} {'call ms':>10} {'modules':>8}")
    for name, figure in figures.items():
        print(f"{name:<36} {figure['import_ms']:>10.1f} {figure['first_call_ms']:>10.1f} {figure['modules']:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
