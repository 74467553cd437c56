"""The catalog is DingTalk's documentation: every sample's fields and value types against the
field lists transcribed from the docs (tests/data/dingtalk_fields.json, with the source of each),
the audit's findings (../shared/reference/dingtalk-payloads.md) as facts, and ``events TYPE``."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TEST_ENV

from dingtalk_fc_dev import catalog

with open(os.path.join(ROOT, "tests", "data", "dingtalk_fields.json"), encoding="utf-8") as _source:
    DOCUMENTED = json.load(_source)["events"]

SAMPLES = [(t, v) for t in catalog.event_types() for v in catalog.variants(t)]


def json_type(value):
    """The transcription's notation: a JSON type name, an object's fields, a list of objects as
    a one-item list of their fields."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, str)) or value is None:
        return {int: "integer", float: "number", str: "string", type(None): "null"}[type(value)]
    if isinstance(value, dict):
        return {field: json_type(item) for field, item in value.items()}
    items = [json_type(item) for item in value]
    if items and all(isinstance(item, dict) for item in items):
        return [{field: kind for item in items for field, kind in item.items()}]
    return "array of " + "/".join(sorted(set(items))) if items else "array"


def test_the_catalog_and_the_transcription_list_the_same_types_and_variants():
    assert {t: sorted(catalog.variants(t)) for t in catalog.event_types()} == {
        t: sorted(variants) for t, variants in DOCUMENTED.items()
    }


@pytest.mark.parametrize(("event_type", "variant"), SAMPLES, ids=["-".join(s) for s in SAMPLES])
def test_every_sample_has_the_documented_fields_and_types(event_type, variant):
    documented = DOCUMENTED[event_type][variant]
    assert json_type(catalog.sample(event_type, variant)) == documented["fields"]
    assert catalog.source(event_type, variant) == documented["source"]
    assert documented["source"].startswith("https://")


# Findings of the audit that a sample drifting back would contradict: (type, variant, field, present).
FACTS = [
    ("meetingroom_book", "current", "eventSubType", True),
    ("meetingroom_book", "current", "type", False),
    ("meetingroom_book", "current", "bookId", True),
    ("meetingroom_book", "bookCancel", "userId", False),
    ("meetingroom_room_info", "current", "type", False),
    ("attendance_check_record", "current", "dataList", True),
    ("attendance_check_record", "current", "DataList", False),
    ("attendance_check_record", "current", "staffId", False),
    ("attendance_check_record", "legacy", "DataList", True),
    ("hrm_mdm_user_change", "current", "changeType", True),
    ("hrm_mdm_user_change", "current", "actionType", False),
    ("hrm_user_record_change", "current", "changeFields", False),
    ("hrm_user_record_change", "current", "optStaffId", False),
    ("chat_update_owner", "current", "owner", True),
    ("chat_update_owner", "legacy", "Owner", True),
    ("chat_update_title", "current", "title", True),
    ("chat_quit", "current", "userId", False),
    ("chat_disband", "legacy", "UserId", False),
    ("chat_add_member", "legacy", "OpenConversationId", True),
    ("user_modify_org", "current", "diffInfo", True),
    ("user_active_org", "current", "timeStamp", False),
    ("label_conf_modify", "current", "preLabelList", True),
    ("label_conf_add", "current", "scope", True),
    ("bpms_instance_change", "legacy", "CorpId", False),
    ("bpms_instance_change", "terminate", "result", False),
    ("suite_ticket", "legacy", "TimeStamp", True),
    ("suite_ticket", "legacy", "eventId", False),
    ("check_create_suite_url", "legacy", "TestSuiteKey", False),
]


@pytest.mark.parametrize(("event_type", "variant", "field", "present"), FACTS, ids=["-".join(f[:3]) for f in FACTS])
def test_the_audit_findings_hold(event_type, variant, field, present):
    assert (field in catalog.sample(event_type, variant)) is present


def test_documented_variants_and_values():
    assert [catalog.sample("bpms_instance_change", v)["type"] for v in ("start", "current", "terminate", "delete")] == [
        "start",
        "finish",
        "terminate",
        "delete",
    ]
    assert {catalog.sample("bpms_task_change", v).get("result") for v in catalog.variants("bpms_task_change")} >= {
        "agree",
        "refuse",
        "redirect",
    }
    assert catalog.sample("bpms_task_change", "cancel")["type"] == "cancel"
    subtypes = {catalog.sample("meetingroom_book", v)["eventSubType"] for v in catalog.variants("meetingroom_book")}
    assert subtypes == set(catalog.values("meetingroom_book")["eventSubType"])
    assert set(catalog.values("hrm_mdm_user_change")["changeType"]) == {"1", "2", "3", "4", "8"}
    assert isinstance(catalog.sample("check_in")["timeStamp"], int)
    assert isinstance(catalog.sample("chat_quit", "legacy")["TimeStamp"], int)


def test_the_common_types_the_audit_found_missing_are_there():
    missing = {
        "attendance_approve_status_change",
        "attend_bossCheck_change",
        "attend_group_change",
        "attend_shift_change",
        "workflow_form_change",
        "calendar_event_change",
        "todo_task_create",
        "todo_task_update",
        "todo_task_delete",
        "suite_relieve",
        "org_micro_app_stop",
        "org_micro_app_restore",
    }
    assert missing <= set(catalog.event_types())


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "dingtalk_fc_dev", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **TEST_ENV},
    )


def test_events_type_prints_fields_types_variants_values_and_the_doc_url():
    result = run_cli("events", "bpms_task_change")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "bpms_task_change (approval)"
    assert "  current: https://open.dingtalk.com/document/development/event-bpms-task-change" in lines
    assert "    taskId: integer" in lines
    for variant in ("legacy", "start", "cancel", "redirect"):
        assert any(line.startswith(f"  {variant}: https://") for line in lines), variant
    assert any(line.startswith("    result = redirect: ") for line in lines)
    nested = run_cli("events", "attendance_check_record").stdout.splitlines()
    assert "    dataList: array of object" in nested
    assert "      checkByUser: boolean" in nested


def test_events_with_an_unknown_type_is_one_line_and_exit_2():
    result = run_cli("events", "no_such_event")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: unknown event type 'no_such_event'")


def test_trigger_sends_a_documented_variant(monkeypatch, start_server):
    import io

    from dingtalk_fc_dev import cli

    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    server = start_server()
    out = io.StringIO()
    assert cli.main(["trigger", "bpms_task_change", "--variant", "redirect", "--url", server.url], out=out) == 0
    assert cli.main(["trigger", "meetingroom_book", "--variant", "bookCancel", "--url", server.url], out=out) == 0
    approval, cancellation = server.records()
    assert (approval["change_type"], approval["result"]) == ("finish", "redirect")
    assert (cancellation["change_type"], cancellation["book_id"]) == ("bookCancel", "ding234xxxx")
