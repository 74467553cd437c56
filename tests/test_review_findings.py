"""Adversarial review findings: each test reproduces a broken promise through a public
entrypoint (the WSGI handler via the test kit's harness, index.worker, index.recover)."""

import asyncio
import json
import time

import test_recovery
import test_recovery_limits
from conftest import APP_SECRET, CANARY, TEST_ENV
from stubs.dingtalk_api import DingTalkApiStub, v1_item
from test_recovery import Handler, context, event
from test_recovery_limits import MAX_DEFERRABLE_BODY, large_event

from dingtalk_fc import Router, recovery
from dingtalk_fc_dev.testkit import FakeFcContext

# the fixtures, shared
recovering, cli, with_worker = test_recovery.recovering, test_recovery.cli, test_recovery_limits.with_worker

APPROVAL = {"EventType": "bpms_instance_change", "eventId": "review-e1", "processInstanceId": "p-1"}
SUITE = "25300001"
CORP = "ding9f50b1000000aaaa"


def counting_router(behaviour, event_type="bpms_instance_change", **route):
    runs = []
    router = Router()

    @router.on(event_type, **route)
    def handler(event):
        runs.append(event.key)
        return behaviour(len(runs))

    return router, runs


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


def test_a_handler_whose_returned_fields_cannot_be_encoded_runs_again_after_a_500(make_harness):
    """The handler ran, but a returned value the record encoder refuses (a dict keyed by a tuple,
    a self-referencing list) turns the delivery into 500 *after* it ran, leaving the claim neither
    completed nor released: 409 for the in-flight lease, then the handler runs a second time."""

    router, runs = counting_router(lambda n: {"summary": {("dept", 1): "moved"}})
    harness = make_harness(router)
    first = harness.send(APPROVAL)
    assert runs == ["review-e1"]
    # the handler has run: nothing may turn this delivery into a failure (once.py's own comment)
    assert harness.sender.check_reply(first.status, first.body) == "success"


def test_a_handler_whose_returned_fields_cannot_be_encoded_does_not_leave_its_claim_held(make_harness):
    router, runs = counting_router(lambda n: {"summary": {("dept", 1): "moved"}})
    harness = make_harness(router)
    harness.send(APPROVAL)
    second = harness.send(APPROVAL)
    assert second.status != 409, "the claim was left held after the 500"
    assert runs == ["review-e1"]


def test_a_handler_raising_a_base_exception_releases_its_claim(make_harness):
    """asyncio.CancelledError (a BaseException since 3.8, what asyncio.run raises when the
    handler's coroutine is cancelled) escapes Once.run, the dispatcher and the callback: no
    record, and the claim is never released, so every redelivery gets 409 for 15 minutes."""

    def behaviour(n):
        if n == 1:
            raise asyncio.CancelledError()
        return None

    router, runs = counting_router(behaviour)
    harness = make_harness(router)
    try:
        first = harness.send(APPROVAL)
    except asyncio.CancelledError:  # what FC's runtime gets: a traceback, a 502, and no record
        first = None
    assert first is not None, "the failure escaped the callback"
    assert first.status == 500
    second = harness.send(APPROVAL)
    assert harness.sender.check_reply(second.status, second.body) == "success"
    assert runs == ["review-e1", "review-e1"]


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
    assert harness.send(batch).status == 500  # the failing item: DingTalk delivers it all again
    failing.clear()
    again = harness.send(batch)
    assert harness.sender.check_reply(again.status, again.body) == "success"
    assert runs.count("user_modify_org") == 1, "an item that ran was run again by the redelivery"


def test_a_large_recovered_event_run_in_the_recovery_cannot_be_adopted_by_a_queued_worker_job(with_worker):
    """A recovered event too large for FC runs in the recovery "under the same claim" the
    hand-off would have used, whose token is the FC task id: exactly the token the worker
    adopts. A job of the same event that FC still holds (the push's hand-off that timed out
    but was queued, or FC's retry after a failed worker attempt) adopts the recovery's live
    claim and runs the handler beside it: twice."""
    import index

    big = large_event(1, 97)
    state = {}

    def queued_job_runs_meanwhile(received, calls):
        if calls == 1:  # while the recovery runs it, FC delivers the queued job to a worker
            try:
                state["worker"] = index.worker(state["job"], FakeFcContext(request_id="w-1", function="worker"))
            except Exception as raised:
                state["worker"] = getattr(raised, "outcome", type(raised).__name__)

    handler = Handler(queued_job_runs_meanwhile)
    harness, dingtalk, _fc = with_worker(handler, DINGTALK_MAX_BODY_BYTES=MAX_DEFERRABLE_BODY)
    state["job"] = harness.seal_job(json.dumps(big), "push", "push-request")
    dingtalk.add(v1_item(big))
    recovery.recover(harness.runtime, "run-1", context())
    assert state["worker"] == "in_flight", "the worker adopted the claim of a run in progress"
    assert handler.completed == {"ev-1": 1}


def test_a_failing_handler_does_not_put_event_plaintext_in_the_log(make_harness, caplog):
    """A handler bug as common as int() on a field logs the field's value: Once.run logs the
    handler's exception with logger.exception, message included, to stderr, which FC ships to
    the same Logstore (the record keeps only error_type, as HandlerFailed promises)."""
    router = Router()
    router.on("bpms_instance_change")(lambda event: {"amount": int(event.get("note"))})
    harness = make_harness(router)
    caplog.set_level("DEBUG", logger="dingtalk_fc")
    reply = harness.send({**APPROVAL, "note": CANARY})
    assert reply.status == 500
    assert CANARY not in caplog.text


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


def test_a_deferred_handler_whose_returned_fields_cannot_be_encoded_is_not_dead_lettered(make_harness):
    """The same on the worker: the handler ran, the worker raises "internal error" with the
    adopted claim still held, FC's three retries each get 409, and the event that ran ends as a
    dead letter, which a re-drive after the in-flight lease runs a second time."""
    router, runs = counting_router(lambda n: {"summary": {("dept", 1): "moved"}}, deferred=True)
    harness = make_harness(router, run_deferred=True, DINGTALK_WORKER_FUNCTION="worker")
    reply = harness.send(APPROVAL)
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    harness.wait_for_workers()
    assert runs == ["review-e1"]
    assert harness.dead_letters == [], "an event that ran was dead-lettered"


def test_an_async_handler_is_never_acknowledged_without_running(make_harness):
    """``async def`` handlers register without a word; calling one only makes a coroutine, which
    Once.run takes for a non-mapping return value: "handled" (a warning), the event marked done,
    DingTalk told success, and the handler's body never runs (nor will it on any redelivery)."""
    ran = []
    router = Router()
    try:

        @router.on("bpms_instance_change")
        async def handler(event):
            ran.append(event.key)

    except (TypeError, ValueError):
        return  # refused when registered: the promise holds
    harness = make_harness(router)
    reply = harness.send(APPROVAL)
    if reply.status == 200:
        assert ran == ["review-e1"], "DingTalk was told success for an event whose handler never ran"


def test_the_cli_recover_does_not_report_a_failed_event_as_retried_on_a_worker(cli):
    """``python -m dingtalk_fc_dev recover`` deletes the items it pulls. An inline handler that
    fails is "requeued" to the CLI's InlineWorker, whose hand_off swallows the worker's failure,
    so the summary on stdout says ``retried_on_worker: 1, failed: 0``: nothing will retry it, no
    dead letter is written, and the only copy of the event is the journal line on stderr (which
    the documented command line does not keep)."""
    stub = DingTalkApiStub(TEST_ENV["DINGTALK_APP_KEY"], APP_SECRET)
    try:
        router = Router()

        @router.on("user_add_org")
        def handler(received):
            raise RuntimeError("back end down")

        stub.add(v1_item(event(1)))
        status, out = cli(
            router,
            "recover",
            DINGTALK_APP_SECRET=APP_SECRET,
            DINGTALK_API_BASE=stub.base,
            DINGTALK_OAPI_BASE=stub.base,
            DINGTALK_RECOVERY_API="v1",
        )
    finally:
        stub.close()
    report = json.loads(out)
    assert status == 1
    assert stub.failed == []  # DingTalk's copy is gone
    assert (report["retried_on_worker"], report["failed"]) == (0, 1), report


def test_defer_all_defers_the_catch_all_too(make_harness):
    """docs/configuration.md: with DINGTALK_DEFER_ALL=1 "every handler without an explicit
    deferred= runs on the worker"; Router.catch_all registers its route with deferred=False,
    so the catch-all still runs inline, inside DingTalk's 1500 ms."""
    router = Router()
    router.catch_all(lambda event: None)
    harness = make_harness(router, run_deferred=True, DINGTALK_DEFER_ALL="1", DINGTALK_WORKER_FUNCTION="worker")
    reply = harness.send({"EventType": "some_new_event", "eventId": "review-e2"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    harness.wait_for_workers()
    assert [r["outcome"] for r in harness.callback_records] == ["deferred"]
