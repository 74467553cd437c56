"""What a handler may do, and what the function does then: return what JSON cannot hold, be
async, raise any exception, quote event data in its error, be the catch-all under
DINGTALK_DEFER_ALL. Through public entrypoints (the WSGI handler via the test kit, index.worker)."""

import asyncio

from conftest import CANARY

from dingtalk_fc import Router

APPROVAL = {"EventType": "bpms_instance_change", "eventId": "review-e1", "processInstanceId": "p-1"}


def counting_router(behaviour, event_type="bpms_instance_change", **route):
    runs = []
    router = Router()

    @router.on(event_type, **route)
    def handler(event):
        runs.append(event.key)
        return behaviour(len(runs))

    return router, runs


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
