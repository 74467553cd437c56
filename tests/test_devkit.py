"""The developer kit: command-line tool, event samples, test-kit fixtures."""

import io
import json
import os
import subprocess
import sys
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from conftest import ROOT, TEST_ENV, scan_for_leaks

from dingtalk_fc import Router
from dingtalk_fc_dev import catalog, cli
from dingtalk_fc_dev.demo import DEMO_ENVIRONMENT
from dingtalk_fc_dev.testkit import DingTalkSender, expected_reply


def run_cli(*argv):
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    if argv[0] != "decrypt":  # showing a captured plaintext to the developer is decrypt's job
        scan_for_leaks(out.getvalue(), "cli " + argv[0])
    return code, out.getvalue()


@pytest.fixture
def keys(monkeypatch):
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def server(start_server):
    return start_server()


def test_trigger_every_catalog_event_and_see_its_record(keys, server):
    for event_type in catalog.event_types():
        code, output = run_cli("trigger", event_type, "--url", server.url)
        assert code == 0, output
        assert output.startswith(f"OK   {event_type}: HTTP 200, encrypted success")
    records = {r["event_type"]: r for r in server.records()}
    assert set(records) == set(catalog.event_types())
    assert all(r["outcome"] == "handled" for r in records.values())


def test_trigger_sets_fields_and_uses_fresh_ids(keys, server):
    assert run_cli("trigger", "user_add_org", "--url", server.url, "--set", 'userId=["new-hire-7"]')[0] == 0
    assert run_cli("trigger", "user_add_org", "--url", server.url)[0] == 0
    first, second = server.records()
    assert first["user_ids"] == ["new-hire-7"]
    assert first["event_id"] != second["event_id"]
    assert second["outcome"] == "handled"  # a fresh event, not a de-duplicated one


def test_trigger_legacy_spelling(keys, server):
    assert run_cli("trigger", "user_leave_org", "--legacy", "--url", server.url)[0] == 0
    assert server.records()[0]["user_ids"] == ["015xxxx227"]


def test_check_url(keys, server):
    code, output = run_cli("check-url", server.url)
    assert code == 0
    assert "check_url" in output


def test_unreachable_url_exits_2(keys, capsys):
    assert run_cli("check-url", "http://127.0.0.1:9/")[0] == 2
    assert "cannot reach http://127.0.0.1:9/" in capsys.readouterr().err


def test_unknown_event_type_exits_2(keys, capsys):
    assert run_cli("trigger", "no_such_event")[0] == 2
    assert "unknown event type" in capsys.readouterr().err


def test_wrong_key_is_reported(monkeypatch, server):
    monkeypatch.setenv("DINGTALK_TOKEN", "someOtherToken")
    monkeypatch.setenv("DINGTALK_AES_KEY", TEST_ENV["DINGTALK_AES_KEY"])
    monkeypatch.setenv("DINGTALK_APP_KEY", TEST_ENV["DINGTALK_APP_KEY"])
    code, output = run_cli("check-url", server.url)
    assert code == 1
    assert "HTTP 403" in output
    assert "signature mismatch" in output


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class BackgroundServer:
    """A WSGI app on a free loopback port, in a thread (one per request with ``threaded``)."""

    def __init__(self, app, threaded=False):
        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        server_class = ThreadingServer if threaded else WSGIServer
        self.httpd = make_server("127.0.0.1", 0, app, server_class=server_class, handler_class=Quiet)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def check_url_against(app):
    server = BackgroundServer(app)
    try:
        return run_cli("check-url", server.url)
    finally:
        server.close()


def test_non_json_reply_is_reported(keys):
    def html(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>nginx default page</html>"]

    code, output = check_url_against(html)
    assert code == 1
    assert "reply is not JSON" in output


def test_slow_reply_warns_about_the_deadline(keys, make_harness):
    harness = make_harness()

    def slow(environ, start_response):
        time.sleep(1.6)
        return harness.app(environ, start_response)

    code, output = check_url_against(slow)
    assert code == 0
    assert "WARN check_url" in output
    assert "over DingTalk's 1500 ms deadline" in output


def test_an_event_still_in_progress_is_reported_as_such_not_as_a_failure(keys, make_harness):
    """DingTalk's retry of an event whose handler still runs gets the function's 409: the
    expected answer while a worker runs, so the CLI says what it is and exits 0."""
    started, release = threading.Event(), threading.Event()
    router = Router()

    @router.on("user_add_org")
    def slow(event):
        started.set()
        release.wait(20)

    server = BackgroundServer(make_harness(router).app, threaded=True)
    trigger = ("trigger", "user_add_org", "--url", server.url, "--keep-ids")  # the same eventId twice
    first = []
    running = threading.Thread(target=lambda: first.append(run_cli(*trigger)))
    running.start()
    try:
        assert started.wait(20)
        code, output = run_cli(*trigger)
    finally:
        release.set()
        running.join(20)
        server.close()
    assert (code, output.split(":")[0]) == (0, "BUSY user_add_org"), output
    assert "HTTP 409" in output
    assert "FAIL" not in output
    assert first[0][0] == 0
    assert first[0][1].startswith("OK   user_add_org")


def test_another_409_is_still_a_failure(keys):
    def conflict(environ, start_response):
        start_response("409 Conflict", [("Content-Type", "application/json")])
        return [json.dumps({"errcode": 1, "errmsg": "not ours"}).encode()]

    code, output = check_url_against(conflict)
    assert code == 1
    assert output.startswith("FAIL check_url: HTTP 409")


def test_decrypt_a_captured_delivery(keys):
    delivery = DingTalkSender(*TEST_ENV.values()).build({"EventType": "user_add_org", "userId": ["u1"]})
    code, output = run_cli("decrypt", "--query", "?" + delivery.query, "--body", delivery.body.decode())
    assert code == 0
    assert json.loads(output) == {"EventType": "user_add_org", "userId": ["u1"]}


def test_decrypt_with_the_wrong_token_fails(keys, monkeypatch, tmp_path):
    delivery = DingTalkSender(*TEST_ENV.values()).build({"EventType": "check_url"})
    (tmp_path / "query").write_text(delivery.query)
    (tmp_path / "body").write_text(delivery.body.decode())
    monkeypatch.setenv("DINGTALK_TOKEN", "anotherToken")
    code, output = run_cli("decrypt", "--query", f"@{tmp_path / 'query'}", "--body", f"@{tmp_path / 'body'}")
    assert code == 1
    assert "signature does not verify" in output


def test_replay_signs_captured_deliveries_afresh(keys, server, tmp_path):
    sender = DingTalkSender(*TEST_ENV.values())
    captured = tmp_path / "captured.jsonl"
    with open(captured, "w") as out:
        for number in range(3):
            delivery = sender.build({"EventType": "user_add_org", "eventId": f"cap-{number}"})
            out.write(json.dumps({"query": delivery.query, "body": delivery.body.decode()}) + "\n")
    code, output = run_cli("replay", str(captured), "--url", server.url, "--as-captured")
    assert code == 0, output
    assert output.count("OK ") == 3
    code, output = run_cli("replay", str(captured), "--url", server.url, "--as-captured")  # exact replays
    assert code == 0, output  # acknowledged, not run again
    assert output.count("OK ") == 3
    replays = [r for r in server.records() if r.get("replay")]
    assert [r["outcome"] for r in replays] == ["duplicate"] * 3
    code, output = run_cli("replay", str(captured), "--url", server.url)  # signed afresh, like a redelivery
    assert code == 0, output
    assert [r["outcome"] for r in server.records()][-3:] == ["duplicate"] * 3


def test_event_samples_replay_against_a_default_server(monkeypatch, start_server):
    """events/ is signed at a fixed past time; replay re-signs it, so `make run`'s defaults accept it."""
    for name in TEST_ENV:
        monkeypatch.delenv(name, raising=False)  # the CLI's demo keys, as `make run` prints them
    server = start_server(**DEMO_ENVIRONMENT)
    code, output = run_cli("replay", os.path.join(ROOT, "events", "deliveries.jsonl"), "--url", server.url)
    assert code == 0, output
    assert output.count("OK ") == len(catalog.event_types())
    assert {r["outcome"] for r in server.records()} == {"handled"}


def test_trigger_describes_a_suite_url_check_reply(monkeypatch, start_server):
    monkeypatch.setenv("DINGTALK_TOKEN", TEST_ENV["DINGTALK_TOKEN"])
    monkeypatch.setenv("DINGTALK_AES_KEY", TEST_ENV["DINGTALK_AES_KEY"])
    monkeypatch.setenv("DINGTALK_APP_KEY", "suite4xxxxxxxxxxxxxxx")  # a suite being created
    server = start_server(DINGTALK_APP_KEY="suite4xxxxxxxxxxxxxxx")
    code, output = run_cli("trigger", "check_create_suite_url", "--url", server.url)
    assert code == 0, output
    assert "HTTP 200, encrypted success" in output


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"DINGTALK_TOKEN": "abc"}, "DINGTALK_AES_KEY and DINGTALK_APP_KEY not set"),
        ({**TEST_ENV, "DINGTALK_APP_KEY": " "}, "DINGTALK_APP_KEY not set"),
        ({**TEST_ENV, "DINGTALK_AES_KEY": "short"}, "DINGTALK_AES_KEY is invalid: aes_key must be 43 characters"),
    ],
    ids=["token only", "blank app key", "short aes key"],
)
def test_cli_names_the_environment_variable(monkeypatch, capsys, environ, named):
    for name in TEST_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert run_cli("check-url", "http://127.0.0.1:9/")[0] == 2
    error = capsys.readouterr().err
    assert named in error
    assert "owner_key" not in error


def test_command_line_entry_point_runs(keys):
    result = subprocess.run(
        [sys.executable, "-m", "dingtalk_fc_dev", "events"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **TEST_ENV},
    )
    assert result.returncode == 0
    assert result.stdout.split() == catalog.event_types()


# -- events/ -----------------------------------------------------------------------------------


def test_event_samples_are_current():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "make_events.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout


def test_event_samples_pass_through_the_function(make_harness):
    harness = make_harness(DINGTALK_TIMESTAMP_TOLERANCE_SECONDS="0", **DEMO_ENVIRONMENT)
    with open(os.path.join(ROOT, "events", "deliveries.jsonl"), encoding="utf-8") as source:
        samples = [json.loads(line) for line in source]
    assert [s["event_type"] for s in samples] == catalog.event_types()
    from dingtalk_fc_dev.testkit import Delivery

    demo = DingTalkSender.from_environment(DEMO_ENVIRONMENT)
    for sample in samples:
        reply = harness.call(Delivery(sample["query"], sample["body"].encode(), {}).wsgi_environ())
        plaintext = catalog.sample(sample["event_type"])
        assert demo.check_reply(reply.status, reply.body) == expected_reply(plaintext)
    with open(os.path.join(ROOT, "events", "fc3-http-check_url.json"), "rb") as source:
        from dingtalk_fc.http_fc3 import serve

        response = serve(harness.runtime, source.read(), None)
    assert demo.check_reply(response["statusCode"], response["body"].encode()) == "success"
    with open(os.path.join(ROOT, "events", "worker-bpms_instance_change.json"), "rb") as source:
        payload = source.read()
    sealed_at = json.loads(payload)["issued_ms"] / 1000  # a worker refuses jobs older than the TTL
    at_sealing = make_harness(clock=lambda: sealed_at + 1, DINGTALK_TIMESTAMP_TOLERANCE_SECONDS="0", **DEMO_ENVIRONMENT)
    assert at_sealing.runtime.run_worker(payload, "local") == "handled"
    assert at_sealing.runtime.run_worker(payload, "local") == "duplicate"
    with pytest.raises(Exception, match="worker job expired"):  # today: long expired
        harness.runtime.run_worker(payload, "local")
    assert harness.last_record["errcode"] == 900151


# -- the pytest fixtures users get -----------------------------------------------------------------


def test_callback_harness_fixture(callback_harness):
    reply = callback_harness.send({"EventType": "user_add_org", "eventId": "fixture-1", "userId": ["u1"]})
    assert callback_harness.sender.check_reply(reply.status, reply.body) == "success"
    assert callback_harness.last_record["handled_by"] == "catalog"  # tests/conftest.py's dingtalk_router


def test_sender_builds_byte_identical_vectors():
    """The test kit reproduces a published DingTalk vector when given its random inputs."""
    sender = DingTalkSender("123456", "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij", "suite4xxxxxxxxxxxxxxx")
    plaintext = '{"EventType":"check_create_suite_url","Random":"LPIdSnlF","TestSuiteKey":"suite4xxxxxxxxxxxxxxx"}'
    delivery = sender.build(plaintext, timestamp="1445827045067", nonce="nEXhMP4r", random_prefix=b"1234567890123456")
    assert delivery.params["msg_signature"] == "bcf6dcefa4ce2dbaf7b0666c7264d46fd9aad4bd"


def test_plain_pytest_on_a_folder_outside_the_suite_gets_the_fixtures(tmp_path):
    """The installed project registers the plugin (pytest11): no conftest, no pytest_plugins."""
    (tmp_path / "test_mine.py").write_text(
        "import pytest\n"
        "from dingtalk_fc import Router\n\n\n"
        "@pytest.fixture\n"
        "def dingtalk_router():  # not handlers.py: whatever a team made of it\n"
        "    router = Router()\n"
        "    router.on('user_add_org')(lambda event: {'mine': True})\n"
        "    return router\n\n\n"
        "def test_fixture(callback_harness):\n"
        "    reply = callback_harness.send({'EventType': 'user_add_org', 'eventId': 'mine-1'})\n"
        "    assert callback_harness.sender.check_reply(reply.status, reply.body) == 'success'\n"
        "    assert callback_harness.last_record['mine'] is True\n"
    )
    pytest_command = os.path.join(os.path.dirname(sys.executable), "pytest")
    result = subprocess.run(
        [pytest_command, "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
