"""Third-party apps' SyncHTTP deliveries through the WSGI app: each ``bizData`` item is its own
event, key and record, dispatched to the handlers a push of its type reaches. Item shapes from
https://open.dingtalk.com/document/development/configure-synchttp-push (kb:0350, kb:0345) and
the data formats page (kb 1702)."""

import collections
import json

import pytest
from conftest import CANARY

from dingtalk_fc import Router

SUITE_ID = "25300001"
CORP = "ding9f50b1000000aaaa"


def row(biz_type, biz_id, biz_data, modified, row_id):
    return {
        "gmt_create": 1652841516000,
        "biz_type": biz_type,
        "open_cursor": 0,
        "subscribe_id": SUITE_ID + "_0",
        "id": row_id,
        "gmt_modified": modified,
        "biz_id": biz_id,
        "biz_data": json.dumps(biz_data),
        "corp_id": CORP,
        "status": 0,
    }


def ticket(value, modified=1652841516000, row_id=23001):
    return row(
        2, SUITE_ID, {"syncAction": "suite_ticket", "suiteTicket": value, "syncSeq": "1ABA5C52"}, modified, row_id
    )


def authorisation():
    auth = {
        "syncAction": "org_suite_auth",
        "auth_corp_info": {"corpid": CORP, "corp_name": "test org", "note": CANARY},
        "auth_user_info": {"userId": "manager4021"},
    }
    return row(4, SUITE_ID, auth, 1608639648000, 7001)


def user_change():
    data = {"errcode": 0, "syncAction": "user_modify_org", "userid": "0216xxxx384", "name": CANARY}
    return row(13, "0216xxxx384", data, 1652846332000, 5872)


def delivery(*items, priority="SYNC_HTTP_PUSH_HIGH"):
    return {"EventType": priority, "bizData": list(items)}


@pytest.fixture
def isv(make_harness):
    """A harness with a handler per ISV event type and a catch-all, counting runs per type."""
    ran = collections.Counter()
    seen = []
    failing = set()
    router = Router()

    def handler(event):
        seen.append(event)
        if event.type in failing:
            raise RuntimeError("back end down")
        ran[event.type] += 1
        return {"handled_as": event.type}

    router.on("suite_ticket", "org_suite_auth", "user_modify_org")(handler)
    router.catch_all(handler)
    harness = make_harness(router)
    harness.ran, harness.seen, harness.failing = ran, seen, failing
    return harness


def send(harness, plaintext):
    reply = harness.send(plaintext)
    return reply.status, reply.body


def item_records(harness):
    return [r for r in harness.records if "sync_item" in r]


def test_each_item_of_a_delivery_runs_once_with_its_own_record(isv):
    status, body = send(isv, delivery(ticket("T1"), authorisation(), user_change()))
    assert isv.sender.check_reply(status, body) == "success"
    assert isv.ran == {"suite_ticket": 1, "org_suite_auth": 1, "user_modify_org": 1}
    records = item_records(isv)
    assert [(r["sync_item"], r["event_type"], r["outcome"]) for r in records] == [
        (0, "suite_ticket", "handled"),
        (1, "org_suite_auth", "handled"),
        (2, "user_modify_org", "handled"),
    ]
    assert len({r["event_id"] for r in records}) == 3
    assert all(r["corp_id"] == CORP for r in records)
    assert records[2]["user_ids"] == ["0216xxxx384"]
    envelope = isv.last_record
    assert (envelope["event_type"], envelope["outcome"], envelope["items"]) == ("SYNC_HTTP_PUSH_HIGH", "handled", 3)
    first = isv.seen[0]
    assert (first.get("suiteTicket"), first.corp_id, first.get("syncHttp")["biz_type"]) == ("T1", CORP, 2)


def test_the_same_delivery_again_runs_none_and_a_later_ticket_runs(isv):
    assert send(isv, delivery(ticket("T1"), user_change()))[0] == 200
    status, body = send(isv, delivery(ticket("T1"), user_change()))  # delivered again, signed afresh
    assert isv.sender.check_reply(status, body) == "success"
    assert isv.ran == {"suite_ticket": 1, "user_modify_org": 1}
    assert [r["outcome"] for r in item_records(isv)[2:]] == ["duplicate", "duplicate"]

    later = delivery(ticket("T2", modified=1652841816000, row_id=23002), priority="SYNC_HTTP_PUSH_HIGH")
    assert isv.sender.check_reply(*send(isv, later)) == "success"
    assert isv.ran["suite_ticket"] == 2
    assert [event.get("suiteTicket") for event in isv.seen if event.type == "suite_ticket"] == ["T1", "T2"]


def test_a_suite_ticket_handler_fires_for_a_legacy_push_and_a_synchttp_item(isv):
    legacy = {"EventType": "suite_ticket", "SuiteKey": "suitexxxx", "SuiteTicket": "L1", "TimeStamp": 1608639648000}
    assert isv.sender.check_reply(*send(isv, legacy)) == "success"
    assert isv.sender.check_reply(*send(isv, delivery(ticket("S1"), priority="SYNC_HTTP_PUSH_MEDIUM"))) == "success"
    assert [event.first("SuiteTicket", "suiteTicket") for event in isv.seen] == ["L1", "S1"]
    assert isv.ran == {"suite_ticket": 2}


def test_an_unknown_biz_type_reaches_the_catch_all(isv):
    unknown = row(99, "x1", {"something": "new"}, 1652841516000, 1)
    assert isv.sender.check_reply(*send(isv, delivery(ticket("T1"), unknown))) == "success"
    (record,) = [r for r in item_records(isv) if r["sync_item"] == 1]
    assert (record["event_type"], record["outcome"]) == ("sync_biz_type_99", "unhandled")
    assert isv.ran == {"suite_ticket": 1, "sync_biz_type_99": 1}


def test_a_failing_item_fails_the_delivery_and_costs_the_others_nothing(isv):
    isv.failing.add("org_suite_auth")
    status, body = send(isv, delivery(ticket("T1"), authorisation(), user_change()))
    assert (status, json.loads(body)["errcode"]) == (500, 900130)  # not success: DingTalk delivers again
    assert [r["outcome"] for r in item_records(isv)] == ["handled", "failed", "handled"]
    assert isv.ran == {"suite_ticket": 1, "user_modify_org": 1}
    isv.failing.clear()
    assert isv.sender.check_reply(*send(isv, delivery(ticket("T1"), authorisation(), user_change()))) == "success"
    assert isv.ran == {"suite_ticket": 1, "org_suite_auth": 1, "user_modify_org": 1}  # only the failed one ran again
    assert [r["outcome"] for r in item_records(isv)[3:]] == ["duplicate", "handled", "duplicate"]


def test_a_malformed_item_is_refused_alone_and_a_malformed_envelope_whole(isv):
    broken = dict(ticket("T9"), biz_data="{not json")
    status, body = send(isv, delivery(broken, user_change()))
    assert (status, json.loads(body)["errcode"]) == (400, 900112)
    assert [(r["sync_item"], r["outcome"]) for r in item_records(isv)] == [(0, "rejected"), (1, "handled")]
    assert isv.ran == {"user_modify_org": 1}

    status, body = send(isv, {"EventType": "SYNC_HTTP_PUSH_HIGH", "bizData": "not a list"})
    assert (status, json.loads(body)["errcode"]) == (400, 900112)
    assert isv.ran == {"user_modify_org": 1}


def test_a_deferred_item_runs_on_the_worker_under_its_own_key(make_harness):
    tickets = []
    router = Router()
    router.on("suite_ticket", deferred=True)(lambda event: tickets.append(event.get("suiteTicket")))
    router.on("user_modify_org")(lambda event: None)
    harness = make_harness(router, run_deferred=True)
    assert harness.sender.check_reply(*send(harness, delivery(ticket("T1"), user_change()))) == "success"
    [run] = harness.wait_for_workers()
    assert run.outcome == "handled"
    assert tickets == ["T1"]
    deferred = [r for r in item_records(harness) if r["event_type"] == "suite_ticket"]
    assert [r["outcome"] for r in deferred] == ["deferred"]
    [worker] = harness.worker_records
    assert worker["event_id"] == deferred[0]["event_id"]  # the worker derives the same key
    assert harness.sender.check_reply(*send(harness, delivery(ticket("T1"), user_change()))) == "success"
    assert [r["outcome"] for r in item_records(harness)[2:]] == ["duplicate", "duplicate"]
    assert tickets == ["T1"]
