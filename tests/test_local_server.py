"""End to end over real HTTP on loopback: `make run`'s server and a DingTalk-side client."""

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from conftest import LOCAL_SERVER, ROOT, TEST_ENV, server_environment, with_canary

from dingtalk_fc_dev.testkit import DingTalkSender, ReplyError

SENDER = DingTalkSender(*TEST_ENV.values())


def test_check_url_and_events_over_http(start_server):
    server = start_server()
    result = SENDER.post(server.url, SENDER.build({"EventType": "check_url"}))
    assert SENDER.check_reply(result.status, result.body) == "success"
    reply = json.loads(result.body)
    assert len(reply["timeStamp"]) == 13
    event = with_canary({"EventType": "user_leave_org", "eventId": "http-1", "userId": ["u9"], "CorpId": "dingc"})
    result = SENDER.post(server.url, SENDER.build(event))
    assert SENDER.check_reply(result.status, result.body) == "success"
    records = server.records()
    assert [r["event_type"] for r in records] == ["check_url", "user_leave_org"]
    assert records[1]["user_ids"] == ["u9"]
    assert records[1]["outcome"] == "handled"
    request_ids = {r["request_id"] for r in records}
    assert len(request_ids) == 2  # a fresh FC-like request id per request


def test_reply_with_the_wrong_owner_key_is_caught_by_the_client(start_server):
    server = start_server()
    other = DingTalkSender(TEST_ENV["DINGTALK_TOKEN"], TEST_ENV["DINGTALK_AES_KEY"], "dingwrongowner000001")
    result = SENDER.post(server.url, SENDER.build({"EventType": "check_url"}))
    with pytest.raises(ReplyError, match="does not decrypt"):
        other.check_reply(result.status, result.body)


def test_get_is_a_health_check_and_errors_are_json(start_server):
    server = start_server()
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"
    result = SENDER.post(server.url + "?nonce=x", SENDER.build({"EventType": "check_url"})._replace(query=""))
    assert result.status == 400
    assert json.loads(result.body)["errcode"] == 900101


def test_ctrl_c_stops_the_server_cleanly(start_server):
    server = start_server()
    assert server.stop() == 0
    assert "stopped" in server.stderr
    assert "Traceback" not in server.stderr


def test_demo_credentials_are_printed_with_a_ready_command(tmp_path):
    """With no DINGTALK_* set, `make run` uses and prints the demo keys, and its command works."""
    env = server_environment({})
    process = subprocess.Popen(
        [*LOCAL_SERVER, "--port", "0"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = []
        while not any(line.startswith("         ") for line in banner):
            banner.append(process.stderr.readline())
        text = "".join(banner)
        assert "DINGTALK_TOKEN=mryue" in text
        command = next(line for line in banner if "check-url" in line).split("try it:", 1)[1].split()
        assert command[0] == ".venv/bin/python"
        result = subprocess.run(
            [sys.executable, *command[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK   check_url" in result.stdout
    finally:
        process.terminate()
        process.wait(10)


def run_server_expecting_refusal(environ, *args):
    """Start the local server as `make run` does; it must exit at once with status 2."""
    env = server_environment(environ)
    result = subprocess.run([*LOCAL_SERVER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()


def test_a_port_in_use_is_one_line_and_exit_2():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        lines = run_server_expecting_refusal(TEST_ENV, "--port", str(port))
    assert lines == [f"error: port {port} on 127.0.0.1 is already in use: stop what holds it, or set PORT=<another>"]


def test_some_but_not_all_keys_set_refuses_to_start():
    lines = run_server_expecting_refusal({"DINGTALK_TOKEN": "abc"}, "--port", "0")
    assert len(lines) == 1
    assert lines[0].startswith("error: DINGTALK_AES_KEY and DINGTALK_APP_KEY not set")
    assert "not starting" in lines[0]


def test_a_misconfigured_function_refuses_to_start():
    lines = run_server_expecting_refusal({**TEST_ENV, "DINGTALK_DEDUP_TTL_SECONDS": "soon"}, "--port", "0")
    assert lines[-1] == ("error: configuration error: DINGTALK_DEDUP_TTL_SECONDS must be a whole number; not starting")


BANNER_ROUTER = """\
from dingtalk_fc import Router

router = Router()


@router.on("user_add_org", "user_leave_org")
def people(event):
    return None


@router.on("bpms_instance_change", deferred=True)
def approvals(event):
    return None


@router.catch_all
def everything_else(event):
    return None
"""


def test_the_banner_lists_the_registered_handlers(tmp_path):
    """`make run` says which handler answers which EventType (and which run on the worker)."""
    (tmp_path / "banner_router.py").write_text(BANNER_ROUTER)
    env = server_environment(TEST_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    command = [sys.executable, "-m", "dingtalk_fc_dev.local_server", "--handlers", "banner_router", "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        banner = []
        while not banner or not banner[-1].startswith(("listening on", "error")):
            banner.append(process.stderr.readline())
    finally:
        process.terminate()
        process.wait(10)
    assert banner[-4:-1] == [
        "  approvals (deferred: runs on the worker): bpms_instance_change\n",
        "  people: user_add_org, user_leave_org\n",
        "  everything_else: any other EventType\n",
    ], banner
    assert banner[-5] == "handlers in banner_router.py:\n"
