"""Tests of the shipped handlers.py: yours to extend or replace when you change the handlers.

``callback_harness`` (from the installed dev kit's pytest plugin) runs ``handlers.router`` behind
the real pipeline and WSGI adapter with the demo keys; override the ``dingtalk_router`` or
``dingtalk_environment`` fixtures in a ``conftest.py`` to change either. Run with
``.venv/bin/pytest handler_tests`` (``make test`` runs them too).
"""

import json

from dingtalk_fc import Event, Router
from dingtalk_fc.events import URL_CHECKS
from dingtalk_fc_dev import catalog
from dingtalk_fc_dev.testkit import CallbackHarness


def test_new_hire_is_handled(callback_harness):
    reply = callback_harness.send({"EventType": "user_add_org", "eventId": "e1", "userId": ["u1"]})
    assert callback_harness.sender.check_reply(reply.status, reply.body) == "success"
    assert callback_harness.last_record["outcome"] == "handled"
    assert callback_harness.last_record["family"] == "address_book"


def test_every_catalog_event_has_a_handler(callback_harness):
    """Every documented sample of every type: current, legacy and variants such as ``cancel``."""
    for event_type in catalog.event_types():
        if event_type in URL_CHECKS:
            continue
        for variant in catalog.variants(event_type):
            reply = callback_harness.send(catalog.sample(event_type, variant))
            assert reply.status == 200, (event_type, variant)
            family = callback_harness.last_record.get("family")
            assert family == catalog.family(event_type), f"{event_type} ({variant}) reaches {family}"


def test_a_third_party_app_gets_its_suite_ticket_over_synchttp(callback_harness):
    """Current subscriptions send a third-party app one envelope with several items."""
    ticket = {
        "biz_type": 2,
        "biz_id": "25300001",
        "corp_id": "ding9f50b1000000aaaa",
        "subscribe_id": "25300001_0",
        "gmt_modified": 1652841516000,
        "biz_data": json.dumps({"syncAction": "suite_ticket", "suiteTicket": "T1"}),
    }
    reply = callback_harness.send({"EventType": "SYNC_HTTP_PUSH_HIGH", "bizData": [ticket]})
    assert callback_harness.sender.check_reply(reply.status, reply.body) == "success"
    item, envelope = callback_harness.records[-2:]
    assert (item["event_type"], item["family"]) == ("suite_ticket", "suite")
    assert envelope["items"] == 1


def test_unknown_event_types_reach_the_catch_all(callback_harness):
    reply = callback_harness.send({"EventType": "something_new", "eventId": "e2"})
    assert reply.status == 200
    assert callback_harness.last_record["outcome"] == "unhandled"


def test_a_deferred_handler_runs_on_the_worker(dingtalk_environment):
    """How to test a ``deferred=True`` handler: the reply comes first, then the worker runs it."""
    approvals = []
    router = Router()

    @router.on("bpms_instance_change", deferred=True)
    def approval(event: Event) -> dict:
        approvals.append(event.get("processInstanceId"))
        return {"recorded": True}

    harness = CallbackHarness(router, dingtalk_environment, run_deferred=True)
    reply = harness.send(catalog.sample("bpms_instance_change"))
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
    assert harness.callback_records[-1]["outcome"] == "deferred"
    [run] = harness.wait_for_workers()
    assert run.outcome == "handled"
    assert approvals == [catalog.sample("bpms_instance_change")["processInstanceId"]]
    [worker_record] = harness.worker_records
    assert worker_record["recorded"] is True
