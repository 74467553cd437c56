"""SyncHTTP batches at the limits: the request budget spent by one item, an item nested at the
parser's limit, an item as large as the body limit allows, a failed item's record cut to 8 KiB."""

import json
import time

from dingtalk_fc import Router

SUITE = "25300001"


CORP = "ding9f50b1000000aaaa"


def item(biz_type, biz_id, biz_data, row_id):
    return {
        "gmt_create": 1652841516000,
        "biz_type": biz_type,
        "open_cursor": 0,
        "subscribe_id": SUITE + "_0",
        "id": row_id,
        "gmt_modified": 1652841516000 + row_id,
        "biz_id": biz_id,
        "biz_data": json.dumps(biz_data),
        "corp_id": CORP,
        "status": 0,
    }


def test_a_synchttp_item_after_a_slow_one_is_not_run_again_when_the_batch_is_redelivered(make_harness, redis_url):
    """One request budget covers the whole SyncHTTP batch: once a slow item has spent it, every
    later item's Redis claim fails with "request budget spent", which Once.claim treats as a
    store outage and fails open: the item runs with no claim and is never marked done. When
    another item fails and DingTalk redelivers the batch, the item that ran runs again."""
    runs = []
    failing = {"org_suite_auth"}
    router = Router()

    @router.on("suite_ticket", "user_modify_org", "org_suite_auth")
    def handler(event):
        runs.append(event.type)
        if event.type == "suite_ticket":
            time.sleep(0.1)  # spends the 50 ms budget
        if event.type in failing:
            raise RuntimeError("back end down")

    harness = make_harness(router, DINGTALK_DEDUP_REDIS_URL=redis_url, DINGTALK_REQUEST_BUDGET_MS="50")
    batch = {
        "EventType": "SYNC_HTTP_PUSH_HIGH",
        "bizData": [
            item(2, SUITE, {"syncAction": "suite_ticket", "suiteTicket": "T1"}, 1),
            item(13, "u1", {"syncAction": "user_modify_org", "userid": "u1"}, 2),
            item(4, SUITE, {"syncAction": "org_suite_auth"}, 3),
        ],
    }
    first = harness.send(batch)
    assert first.status == 503  # the budget ran out before the later items: they wait for the redelivery
    assert [r["errcode"] for r in harness.records if r.get("sync_item") in (1, 2)] == [900135, 900135]
    failing.clear()
    again = harness.send(batch)
    assert harness.sender.check_reply(again.status, again.body) == "success"
    assert runs.count("user_modify_org") == 1, "an item that ran was run again by the redelivery"


def test_a_synchttp_item_nested_just_below_the_parsers_limit_is_a_400_not_a_500(make_harness):
    """item_events catches RecursionError around json.loads of biz_data only; Event.from_data's
    json.dumps of the same data runs a few frames deeper, so at the boundary the item parses and
    then fails to serialise: 500 "internal error" with a traceback for the whole delivery (the
    other items never run), where every deeper nesting gets 400 900115."""
    router = Router()
    router.catch_all(lambda event: None)
    harness = make_harness(router)
    statuses = {}
    for depth in range(600, 1200):
        biz_data = '{"syncAction":"suite_ticket","x":' + "[" * depth + "]" * depth + "}"
        row = {"biz_type": 2, "biz_id": "1", "biz_data": biz_data, "corp_id": CORP, "gmt_modified": depth}
        reply = harness.send({"EventType": "SYNC_HTTP_PUSH_HIGH", "bizData": [row]})
        statuses.setdefault(reply.status, []).append(depth)
    assert 500 not in statuses, f"500 at nesting depth {statuses.get(500)}"


def test_a_synchttp_item_that_fits_the_body_limit_can_be_handed_off(make_harness):
    """With a worker the body limit (<= 120 KiB) is meant to make every pushed event's job fit
    FC's 128 KB (docs/guarantees.md), but a SyncHTTP item's plaintext is its data re-serialised
    with ensure_ascii (Event.from_data): each CJK character, 3 bytes in the push, becomes 6. A
    deferred item with a 25,000-character Chinese field arrives in a 100 KB body and is refused
    413 on every redelivery (the other items ran): that item can never run from a push."""
    tickets = []
    router = Router()
    router.on("org_suite_auth", deferred=True)(lambda event: tickets.append(event.key))
    harness = make_harness(router, run_deferred=True, DINGTALK_MAX_BODY_BYTES="122880")
    auth = {"syncAction": "org_suite_auth", "auth_corp_info": {"corp_name": "\u7ec4" * 25000}}
    row = dict(item(4, SUITE, auth, 1), biz_data=json.dumps(auth, ensure_ascii=False))  # as DingTalk's Java sends it
    delivery = harness.sender.build({"EventType": "SYNC_HTTP_PUSH_HIGH", "bizData": [row]})
    assert len(delivery.body) <= 122880  # accepted by the body limit
    reply = harness.call(delivery.wsgi_environ())
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    harness.wait_for_workers()
    assert len(tickets) == 1


def test_a_record_cut_to_8_kib_keeps_why_an_item_failed_and_which_item_it_was(make_harness):
    """Identifiers alone (50 user ids and 50 department ids of 128 characters, as bounded) take a
    record over 8 KiB; the cut keeps ESSENTIAL_FIELDS only, which drop ``sync_item`` (which item
    of the batch), ``error_type`` (what the handler raised), ``errmsg``, ``corp_id`` and
    ``latency_ms``: the failed item's record no longer says which item failed or why."""
    router = Router()

    @router.on("user_modify_org")
    def handler(event):
        raise RuntimeError("back end down")

    harness = make_harness(router)
    ids = ["u" * 120 + str(n).zfill(8) for n in range(50)]
    data = {"syncAction": "user_modify_org", "userIds": ids, "deptIds": ids}
    reply = harness.send({"EventType": "SYNC_HTTP_PUSH_HIGH", "bizData": [item(13, "u1", data, 1)]})
    assert reply.status == 500
    (failed,) = [
        r for r in harness.records if r.get("outcome") == "failed" and r.get("event_type") == "user_modify_org"
    ]
    missing = [f for f in ("sync_item", "error_type", "errmsg", "corp_id") if f not in failed]
    assert not missing, f"the cut record lost {missing}"
