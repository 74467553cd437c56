"""The command-line tool on hostile or broken input: one line and exit 2 for a file it cannot
read, a per-line FAIL for an entry it cannot run (and the rest of the file still runs), a
summary always, ASCII output whatever stdout's encoding, and no traceback."""

import io
import json
import os
import subprocess
import sys

import pytest
import test_recovery
from conftest import ROOT, TEST_ENV, scan_for_leaks, server_environment
from stubs.dingtalk_api import v1_item
from test_recovery import Handler, event

from dingtalk_fc import Event, Router
from dingtalk_fc.jobs import REJECTED_ITEM

recovering, cli = test_recovery.recovering, test_recovery.cli  # the fixtures, shared
NESTED = "[" * 100000 + "]" * 100000


def approval_router(handler):
    router = Router()
    router.on("bpms_instance_change", "user_add_org")(handler)
    return router


def journal_line(harness, n):
    job = harness.seal_job(Event.from_data(event(n)), "recovery", "run-1")
    return json.dumps({"stage": "pulled", "job": job.decode()})


def test_redrive_fails_the_entries_it_cannot_run_and_runs_the_rest(make_harness, cli, tmp_path):
    harness = make_harness()
    job = json.loads(harness.seal_job(Event.from_data(event(1)), "recovery", "r"))
    sealed = json.loads(
        harness.runtime.load().jobs.seal(json.dumps(v1_item(event(2))), "recovery", "r", purpose=REJECTED_ITEM)
    )
    lines = [
        # lone surrogates inside the sealed text itself (what json.loads gives for "\ud800")
        json.dumps({"job": json.dumps(dict(job, sealed=job["sealed"] + "\ud800"), ensure_ascii=False)}),
        json.dumps({"sealed_item": json.dumps(dict(sealed, sealed="\udc00" + sealed["sealed"]), ensure_ascii=False)}),
        json.dumps({"sealed_item": json.dumps(dict(sealed, mac="é" * 64))}),  # a non-ASCII mac
        json.dumps({"job": json.dumps(dict(job, mac="\udcff" * 64), ensure_ascii=False)}),
        journal_line(harness, 3),
    ]
    export = tmp_path / "mixed.jsonl"
    export.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    handler = Handler()
    status, out = cli(approval_router(handler), "redrive", str(export))
    assert status == 1
    assert out.splitlines() == [
        f"FAIL {export}:1: worker job not authentic (not a JSON job)",
        f"FAIL {export}:2: worker job not authentic (not a JSON job)",
        f"FAIL {export}:3: worker job not authentic (malformed job)",
        f"FAIL {export}:4: worker job not authentic (not a JSON job)",
        "redrive: 5 entries: 1 handled, 4 rejected",
    ]
    assert handler.completed == {"ev-3": 1}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b'{"job": "x"}\n' + NESTED.encode() + b"\n", "error: line 2: JSON nested too deeply"),
        (b'{"job": "x"}\n{"job": "\xff\xfe"}\n', "error: line 2: not UTF-8"),
    ],
)
def test_redrive_refuses_a_file_it_cannot_read_in_one_line_before_running_anything(
    cli, tmp_path, monkeypatch, content, error
):
    export = tmp_path / "broken.jsonl"
    export.write_bytes(content)
    handler = Handler()
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    status, out = cli(approval_router(handler), "redrive", str(export))
    assert (status, out, stderr.getvalue()) == (2, "", error + "\n")
    assert handler.calls == 0


def run_cli(*args, env=None):
    result = subprocess.run(
        [sys.executable, "-m", "dingtalk_fc_dev", *args],
        cwd=ROOT,
        env=server_environment({**TEST_ENV, **(env or {})}),
        capture_output=True,
        timeout=60,
    )
    scan_for_leaks(result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace"), str(args))
    return result


def test_replay_of_a_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path):
    captured = tmp_path / "captured.jsonl"
    captured.write_bytes(b'{"query": "a", "body": "\xff"}\n')
    result = run_cli("replay", str(captured), "--url", "http://127.0.0.1:9/")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [f"error: {captured}:1: not UTF-8"]


@pytest.mark.parametrize("body", ['{"encrypt": 5}', '{"encrypt": null}', '{"encrypt": ["a"]}', NESTED])
def test_decrypt_of_a_body_without_an_encrypt_string_is_one_line_and_exit_2(body, tmp_path):
    saved = tmp_path / "body.json"
    saved.write_text(body)
    result = run_cli("decrypt", "--query", "msg_signature=a&timestamp=1&nonce=n", "--body", "@" + str(saved))
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == ['error: the body must be JSON like {"encrypt": "..."}']


def test_decrypt_of_a_body_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path):
    saved = tmp_path / "body.json"
    saved.write_bytes(b'{"encrypt": "\xff"}')
    result = run_cli("decrypt", "--query", "a=b", "--body", "@" + str(saved))
    assert (result.returncode, result.stderr.decode().splitlines()) == (2, [f"error: {saved}: not UTF-8"])


@pytest.fixture
def handlers_dir(tmp_path):
    """A ``handlers`` module of the product router for the CLI subprocess: a team's handlers.py
    stays out of the product's tests."""
    folder = tmp_path / "handlers"
    folder.mkdir()
    (folder / "handlers.py").write_text("from support.product_router import router  # noqa: F401\n")
    return str(folder)


@pytest.mark.parametrize("encoding", ["ascii", "utf-8", "latin-1"])
def test_recover_dry_run_writes_every_item_whatever_stdout_can_encode(recovering, handlers_dir, tmp_path, encoding):
    harness, dingtalk = recovering(Handler())
    odd = {**event(2), "userId": ["\ud800", "用户"], "staffId": "\udfff"}
    escaped = dict(v1_item(odd), callBackData=json.dumps({k: v for k, v in odd.items() if k != "EventType"}))
    dingtalk.add(v1_item(event(1)), escaped, v1_item(event(3)), {"callBackTag": "x y"})
    environ = {name: value for name, value in harness.runtime.environ.items() if name.startswith("DINGTALK_")}
    output = tmp_path / "failed.jsonl"
    with open(output, "wb") as out:
        result = subprocess.run(
            [sys.executable, "-m", "dingtalk_fc_dev", "recover", "--dry-run"],
            cwd=ROOT,
            env={
                **server_environment(environ),
                "PYTHONIOENCODING": encoding,
                "PYTHONPATH": os.pathsep.join([handlers_dir, os.path.join(ROOT, "tests")]),
            },
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    scan_for_leaks(output.read_bytes().decode("ascii") + result.stderr.decode(), "recover --dry-run")
    assert result.stderr.decode().count("Traceback") == 0, result.stderr.decode()[-2000:]
    assert result.returncode != 2, result.stderr.decode()[-2000:]
    lines = [json.loads(line) for line in output.read_bytes().decode("ascii").splitlines()]
    assert [line.get("event_id", line.get("rejected")) for line in lines] == [
        "ev-1",
        "ev-2",
        "ev-3",
        "plaintext has no string EventType",
    ]
    assert lines[1]["user_ids"] == ["\ud800", "用户"]
    assert result.stderr.decode().splitlines()[-1] == "4 item(s) in the failed list (v1 API), 1 rejected"
    assert result.returncode == 1  # a rejected item needs the operator


def test_recover_exits_non_zero_when_an_item_was_rejected(recovering, cli):
    handler = Handler()
    harness, dingtalk = recovering(handler)
    dingtalk.add(v1_item(event(1)), {"callBackTag": "user_add_org", "callBackData": "[1]"})
    environ = {name: value for name, value in harness.runtime.environ.items() if name.startswith("DINGTALK_")}
    status, out = cli(approval_router(handler), "recover", **environ)
    report = json.loads(out)
    assert (report["rejected"], report["handled"], status) == (1, 1, 1)
