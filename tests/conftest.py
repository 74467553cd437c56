"""Shared fixtures, and the suite-wide check that no secret or plaintext reaches a log.

Every test's captured stdout, stderr and log records, and the output of every server process
the tests start, are scanned at the end of the session for the test credentials' token and
aes_key, for the JSON key ``"EventType"`` (which appears in plaintexts, never in records) and
for a canary string the tests put into event plaintexts. A hit fails the session.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from support import counting, product_router  # noqa: E402

from dingtalk_fc_dev.testkit import CallbackHarness, DingTalkSender, FakeFcContext  # noqa: E402

TESTS = os.path.join(ROOT, "tests")

TEST_ENV = {
    "DINGTALK_TOKEN": "tok3nUsedOnlyInTests",
    "DINGTALK_AES_KEY": "q7JbXwJ4m2Zk9sPcVdT0fR8nLgYhE3uA6iOoKl1MxN5",
    "DINGTALK_APP_KEY": "dingtestappkey000001",
}
PREVIOUS_KEYS = {
    "DINGTALK_PREVIOUS_TOKEN": "previousTok3n",
    "DINGTALK_PREVIOUS_AES_KEY": "Zm9yZXZlcnlvbmV3aG9yb3RhdGVzdGhlaXJrZXlzMDE",
}
CANARY = "PLAINTEXT-CANARY-7f3a9c"
SECRET_NOTE = "Zq8" + "x7Kd2PmV9rTb4NcW6yHf3LsJ1gQa5uE0"  # plaintext bytes that must never be logged
APP_SECRET = "AppSecretUsedOnlyInTests0c4b2e9f"  # recovery's DINGTALK_APP_SECRET
REDIS_PASSWORD = "RedisPasswordUsedOnlyInTests5e1d"  # in the deploy tests' DINGTALK_DEDUP_REDIS_URL
DEPLOY_KEY_SECRET = (
    "dK7q2xDeployKeySecretOnlyInTests7a2c"  # the deploy tests' ACCESS_KEY_SECRET (a prefix no tool prints)
)
ACCESS_TOKEN_MARKER = "AccessTokenMarker9d1e"  # in every token tests/stubs/dingtalk_api.py issues
LEAK_MARKERS = [
    TEST_ENV["DINGTALK_TOKEN"],
    TEST_ENV["DINGTALK_AES_KEY"],
    PREVIOUS_KEYS["DINGTALK_PREVIOUS_TOKEN"],
    PREVIOUS_KEYS["DINGTALK_PREVIOUS_AES_KEY"],
    CANARY,
    '"EventType"',
    "test-access-key-secret",  # FakeFcContext's STS credentials (the deferral signs with them)
    "test-security-token",
    APP_SECRET,
    ACCESS_TOKEN_MARKER,
    REDIS_PASSWORD,
    DEPLOY_KEY_SECRET,
]

# A message cut to length can end inside a secret it quotes: the first characters of one of
# these, ending a JSON string or a line, count as a leak too (at least MIN_PREFIX of them).
SECRETS = [marker for marker in LEAK_MARKERS if marker not in (CANARY, '"EventType"')]
MIN_PREFIX = 6
_CUT_SECRETS = [(secret, re.compile(re.escape(secret[:MIN_PREFIX]) + r'[^"\s]*(?=["\s]|\Z)')) for secret in SECRETS]

_leaks = []  # type: List[str]
_scanned = {"chunks": 0, "reports": 0}


def scan_for_leaks(text: str, where: str) -> None:
    """Note every leak marker in ``text``, and every cut-off secret; the session fails at its end
    if any was found."""
    _scanned["chunks"] += 1
    for marker in LEAK_MARKERS:
        if marker in text:
            _leaks.append(f"{where}: {marker!r}")
    for secret, pattern in _CUT_SECRETS:
        for found in pattern.findall(text):
            if secret.startswith(found) and len(found) < len(secret):
                _leaks.append(f"{where}: the first {len(found)} characters of {secret!r}")


def pytest_runtest_logreport(report: Any) -> None:
    _scanned["reports"] += 1
    for section, text in report.sections:
        scan_for_leaks(text, f"{report.nodeid} [{report.when}] {section}")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if _leaks:
        if reporter:
            reporter.write_line("SECRETS OR PLAINTEXT IN LOGS:", red=True)
            for leak in _leaks[:50]:
                reporter.write_line("  " + leak, red=True)
        session.exitstatus = 1
    elif reporter:
        reporter.write_line(
            f"log scan: {_scanned['reports']} test phases and {_scanned['chunks']} captured outputs, "
            "no secret or plaintext found"
        )


def with_canary(plaintext: Dict[str, Any]) -> Dict[str, Any]:
    return {**plaintext, "note": CANARY}


# What the local FC API stubs accept: FakeFcContext's placeholder STS credentials.
_PLACEHOLDER = FakeFcContext().credentials
STUB_CREDENTIALS = {_PLACEHOLDER.access_key_id: (_PLACEHOLDER.access_key_secret, _PLACEHOLDER.security_token)}


@pytest.fixture
def deferred_function(make_harness: Any, monkeypatch: Any) -> Iterator[Callable[..., Any]]:
    """``make(router, api=FcApiStub, worker="worker", **environ) -> (harness, stub)``: a callback
    function over ``router`` whose deferred events go to a local FC invoke API (FC 2.0's, or
    ``Fc3ApiStub``), which runs ``index.worker`` over the same configuration with FC's retries."""
    from stubs.fc2_api import FcApiStub

    import index

    stubs = []  # type: List[Any]

    def make(router: Any, api: Any = FcApiStub, worker: str = "worker", port: int = 0, **environ: str) -> Any:
        def run_index_worker(payload: bytes, request_id: str) -> Any:
            return index.worker(payload, FakeFcContext(request_id=request_id, function=worker))

        stub = api(run_index_worker, STUB_CREDENTIALS, port=port)
        stubs.append(stub)
        settings = {"DINGTALK_WORKER_FUNCTION": worker, "DINGTALK_FC_ENDPOINT": stub.endpoint, **environ}
        harness = make_harness(router, **settings)
        monkeypatch.setattr(index, "runtime", harness.runtime)
        return harness, stub

    yield make
    for stub in stubs:
        stub.wait()
        stub.close()


@pytest.fixture
def deferred_approval(deferred_function: Any) -> Any:
    """``make(handler, **environ)``: the approval handler deferred to a local FC API."""
    return lambda handler, **environ: deferred_function(
        counting.router_for(handler, "bpms_instance_change", deferred=True), **environ
    )


@pytest.fixture
def s_home(tmp_path: Any) -> Any:
    """A HOME of its own for `s`, removed afterwards: nothing this suite renders reaches ~/.s."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def dingtalk_router() -> Any:
    """The user-facing fixtures (``callback_harness``) over the product router, not handlers.py."""
    return product_router.router


@pytest.fixture
def make_harness() -> Iterator[Callable[..., CallbackHarness]]:
    """Build a callback function in-process over ``router`` (default: the product router)."""
    made = []  # type: List[CallbackHarness]

    def make(
        router: Any = None, clock: Callable[[], float] = time.time, run_deferred: bool = False, **environ: str
    ) -> CallbackHarness:
        settings = {**TEST_ENV, **environ}
        sender = DingTalkSender(*TEST_ENV.values(), clock=clock)
        function_environ = {k: v for k, v in settings.items() if v is not None}
        harness = CallbackHarness(router or product_router.router, function_environ, clock, sender, run_deferred)
        made.append(harness)
        return harness

    yield make
    for harness in made:  # through stdout, so the leak scan reads every record
        sys.stdout.write(harness.log.getvalue())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, password: str = "") -> None:
        self.directory = tempfile.mkdtemp(prefix="redis-test-")
        self.port = 0
        self.password = password  # requirepass, in the URL as redis://:password@...
        self.process = None  # type: Optional[subprocess.Popen]

    @property
    def url(self) -> str:
        return f"redis://{':' + self.password + '@' if self.password else ''}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port (``make test`` installs it if missing)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run the tests through `make test`")
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    if redis_server.process is None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


# `make run`'s server over the product router: a team's handlers.py (and what it imports) stays out.
LOCAL_SERVER = [sys.executable, "-m", "dingtalk_fc_dev.local_server", "--handlers", product_router.__name__]


def server_environment(environ: Dict[str, str]) -> Dict[str, str]:
    """This process's environment without its DINGTALK_* variables, plus ``environ``; the
    product router's folder importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DINGTALK_")}
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class LocalServer:
    """``python -m dingtalk_fc_dev.local_server`` as a child process on a free port, serving the
    product router (``tests/support/product_router.py``), not handlers.py."""

    def __init__(self, environ: Dict[str, str], port: int = 0) -> None:
        self.log_dir = tempfile.mkdtemp(prefix="local-server-")
        self.stdout_path = os.path.join(self.log_dir, "stdout")
        self.stderr_path = os.path.join(self.log_dir, "stderr")
        env = server_environment(environ)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [*LOCAL_SERVER, "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in self.stderr.splitlines():
                if line.startswith("listening on "):
                    return line[len("listening on ") :].strip()
            if self.process.poll() is not None:
                raise RuntimeError("local server exited: " + self.stderr)
            time.sleep(0.05)
        raise RuntimeError("local server did not start: " + self.stderr)

    @property
    def stdout(self) -> str:
        with open(self.stdout_path, encoding="utf-8") as source:
            return source.read()

    @property
    def stderr(self) -> str:
        with open(self.stderr_path, encoding="utf-8") as source:
            return source.read()

    def records(self) -> List[Dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(15)
        scan_for_leaks(self.stdout + self.stderr, "local server " + self.url)
        return self.process.returncode


@pytest.fixture
def start_server() -> Iterator[Callable[..., LocalServer]]:
    servers = []  # type: List[LocalServer]

    def start(**environ: str) -> LocalServer:
        server = LocalServer({**TEST_ENV, **environ})
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
