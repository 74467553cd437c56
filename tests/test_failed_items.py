"""Recovered events look like their push: every item shape of the failed lists (as
../shared/reference/dingtalk-payloads.md §12 shows them), pulled by a real recovery run from the
local DingTalk API, reaches a recording handler with the same ``event.data`` fields,
``user_ids``, ``corp_id`` and log identifiers as the push of the same event."""

import io
import json
import sys
import types

import pytest
from conftest import APP_SECRET, TEST_ENV, with_canary
from stubs.dingtalk_api import DingTalkApiStub, legacy_item, v1_item

from dingtalk_fc import Router, recovery
from dingtalk_fc_dev.testkit import FakeFcContext

APP_KEY = TEST_ENV["DINGTALK_APP_KEY"]
CORP = "ding241f03b8e7d6c5a4"
# Business fields of documented and captured events (sources in the reference, §1-§3, §12).
PUSHES = {
    "user_add_org": {"EventType": "user_add_org", "CorpId": CORP, "userId": ["zhangsan", "lisi"]},
    "bpms_instance_change": {  # legacy approval push: only a lowercase corpId (2019 capture)
        "EventType": "bpms_instance_change",
        "corpId": CORP,
        "processInstanceId": "351783dd-0ef8-4d3c",
        "processCode": "PROC-FF6Y4BE1N2-7ZXS",
        "type": "finish",
        "result": "agree",
        "staffId": "manager7078",
        "title": "Expense claim",
        "url": "https://aflow.dingtalk.com/dingtalk/mobile/homepage.htm",
        "createTime": 1560500000000,
        "finishTime": 1560500100000,
    },
    "bpms_task_change": {  # 2021 capture: a numeric taskId
        "EventType": "bpms_task_change",
        "corpId": CORP,
        "processInstanceId": "a2ee8e0c-42c9-4f5e",
        "processCode": "PROC-EF6Y2QJUO2-DD9E",
        "taskId": 68908377877,
        "type": "finish",
        "result": "redirect",
        "staffId": "0216xxxx384",
        "createTime": 1630000000000,
        "finishTime": 1630000500000,
    },
    "label_conf_add": {"EventType": "label_conf_add", "CorpId": CORP, "LabelIdList": [1146013146], "scope": "1"},
}
CASES = [
    ("user_add_org", "flat", "legacy"),  # the documented sample: {"userid": [...], "corpid": ...}
    ("user_add_org", "2018", "legacy"),
    ("user_add_org", "callbackData", "legacy"),
    ("user_add_org", "callbackData-string", "legacy"),
    ("bpms_instance_change", "bpmsCallBackData", "legacy"),
    ("bpms_task_change", "bpmsCallBackData", "legacy"),
    ("label_conf_add", "roleLabelChange", "legacy"),
    ("user_add_org", "v1", "v1"),
    ("bpms_instance_change", "v1", "v1"),
]


def seen_by_handler(event):
    """What a handler reads: the data (but the list's own event time), the helpers, the ids."""
    data = {k: v for k, v in event.data.items() if k not in ("EventTime", "note")}
    return {"data": data, "user_ids": list(event.user_ids), "corp_id": event.corp_id, "ids": event.identifiers}


@pytest.fixture
def recorded(make_harness):
    stubs = []

    def make(generation):
        seen = []
        router = Router()
        router.on(*PUSHES)(lambda event: seen.append(seen_by_handler(event)))
        stub = DingTalkApiStub(APP_KEY, APP_SECRET)
        stubs.append(stub)
        harness = make_harness(
            router,
            DINGTALK_APP_SECRET=APP_SECRET,
            DINGTALK_API_BASE=stub.base,
            DINGTALK_OAPI_BASE=stub.base,
            DINGTALK_RECOVERY_API=generation,
        )
        return harness, stub, seen

    yield make
    for stub in stubs:
        stub.close()


def context():
    made = FakeFcContext(request_id="recover-run", function="recover")
    made.function.timeout = 300
    return made


@pytest.mark.parametrize(("event_type", "shape", "generation"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_recovered_item_reaches_its_handler_as_the_push_did(recorded, event_type, shape, generation):
    pushed = with_canary(PUSHES[event_type])
    harness, stub, seen = recorded(generation)
    assert harness.sender.check_reply(*harness.send(pushed)[::2]) == "success"
    push_record = harness.last_record
    if shape == "v1":
        item = v1_item({k: v for k, v in pushed.items() if k != "CorpId"}, corp_id=CORP)  # corpId beside the data
    else:
        item = legacy_item(pushed, shape)
    stub.add(item)
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["pulled"], summary["handled"], summary["rejected"]) == (1, 1, 0)
    push_view, recovered_view = seen
    assert recovered_view == push_view
    assert push_view["corp_id"] == CORP
    recovered_record = [r for r in harness.records if r.get("source") == "recovery" and "outcome" in r][-1]
    identifiers = [field for field in push_record if field in push_view["ids"]]
    assert identifiers, "the push logged no identifiers"
    for field in [*identifiers, "corp_id"]:
        assert recovered_record[field] == push_record[field], field


def test_a_documented_flattened_item_names_its_users_and_corp():
    """The doc's own sample (doc 0015 / kb:0235), with nothing from the stub in between."""
    from dingtalk_fc.failed_items import event_from_item

    item = {
        "call_back_tag": "user_add_org",
        "event_time": 1700000000000,
        "user_add_org": {"userid": ["zhangsan"], "corpid": CORP},
    }
    event = event_from_item(item, 65536)
    assert (list(event.user_ids), event.corp_id, event.identifiers) == (["zhangsan"], CORP, {"user_ids": ["zhangsan"]})
    assert not {"userid", "corpid"} & set(event.data)


def test_an_isv_failrecord_item_is_redriven_as_its_push(monkeypatch, capsys, tmp_path):
    """``topapi/callback/failrecord/list`` items (not pulled: ``redrive`` takes them)."""
    from dingtalk_fc_dev import cli as dev_cli

    seen = []
    router = Router()
    router.on("org_suite_auth", "user_add_org")(lambda event: seen.append(seen_by_handler(event)))
    monkeypatch.setitem(sys.modules, "handlers", types.SimpleNamespace(router=router))
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    pushed = PUSHES["user_add_org"]
    item = {
        "id": 7,
        "call_back_tag": "user_add_org",
        "call_back_data": json.dumps({k: v for k, v in pushed.items() if k != "CorpId"}),
        "event_time": 1700000000000,
        "corpid": CORP,
    }
    export = tmp_path / "failrecords.jsonl"
    export.write_text(json.dumps(item) + "\n")
    assert dev_cli.main(["redrive", str(export)], io.StringIO()) == 0
    capsys.readouterr()
    assert seen == [
        {"data": pushed, "user_ids": ["zhangsan", "lisi"], "corp_id": CORP, "ids": {"user_ids": ["zhangsan", "lisi"]}}
    ]
