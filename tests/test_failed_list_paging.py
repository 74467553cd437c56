"""Which failed list a run pulls, and a list that never deletes what it returns: nothing runs
twice, nothing is skipped without the summary saying so, and the run ends within its budget."""

import collections
import json
import time

import pytest
from conftest import APP_SECRET, TEST_ENV, with_canary
from stubs.dingtalk_api import DingTalkApiStub, legacy_item, v1_item

from dingtalk_fc import Router, recovery
from dingtalk_fc_dev.testkit import FakeFcContext

APP_KEY = TEST_ENV["DINGTALK_APP_KEY"]


def event(n):
    return with_canary({"EventType": "user_add_org", "eventId": f"ev-{n}", "CorpId": "dingc", "userId": [f"u{n}"]})


def context():
    made = FakeFcContext(request_id="recover-run", function="recover")
    made.function.timeout = 300
    return made


@pytest.fixture
def keeping_list(make_harness):
    """A harness whose recovery pulls from a list that keeps what it returns."""
    stubs = []

    def make(generation=None, **environ):
        stub = DingTalkApiStub(APP_KEY, APP_SECRET, clear_on_read=False)
        stubs.append(stub)
        ran = collections.Counter()
        router = Router()
        router.on("user_add_org")(lambda received: ran.update([received.key]))
        settings = {"DINGTALK_APP_SECRET": APP_SECRET, "DINGTALK_API_BASE": stub.base, "DINGTALK_OAPI_BASE": stub.base}
        if generation:
            settings["DINGTALK_RECOVERY_API"] = generation
        return make_harness(router, **settings, **environ), stub, ran

    yield make
    for stub in stubs:
        stub.close()


def test_the_documented_legacy_list_is_the_default(keeping_list):
    harness, stub, ran = keeping_list()
    stub.clear_on_read = True
    stub.add(legacy_item(event(1)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert summary["api"] == "legacy"
    assert stub.calls("/call_back/get_call_back_failed_result")
    assert not stub.calls("/v1.0/event/callbacks/failedResults")
    assert ran == {"ev-1": 1}


def test_a_v1_list_that_keeps_what_it_returns_is_paged_by_time_and_runs_each_event_once(keeping_list):
    harness, stub, ran = keeping_list("v1")
    now_ms = int(time.time() * 1000)
    # 450 events over the last hour, more than four pages of 100
    stub.add(*(v1_item(event(n), event_time=now_ms - 3_600_000 + n * 8000) for n in range(450)))
    started = time.monotonic()
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert time.monotonic() - started < 60
    assert ran == {f"ev-{n}": 1 for n in range(450)}
    assert (summary["handled"], summary["duplicates"], summary["stopped"], summary["level"]) == (
        450,
        0,
        "drained",
        "info",
    )
    assert summary["list_not_consumed"] is True
    assert summary["repeated"] == summary["pulled"] - 450 > 0
    assert summary["pages"] < 50
    windows = [r["query"] for r in stub.calls("/v1.0/event/callbacks/failedResults") if r["query"]]
    assert windows
    begin, end = summary["window_ms"]
    assert end - begin >= 3_600_000  # the lookback covers the hour, in milliseconds
    assert all(begin <= int(w["beginTime"]) < int(w["endTime"]) <= end for w in windows)
    journal = [r["event_id"] for r in harness.records if r.get("stage") == "pulled"]
    assert sorted(journal) == sorted(ran)  # journaled once each

    second = recovery.recover(harness.runtime, "run-2", context())  # still listed: duplicates, not re-runs
    assert ran == {f"ev-{n}": 1 for n in range(450)}
    assert (second["handled"], second["duplicates"], second["stopped"]) == (0, 450, "drained")


def test_a_legacy_list_that_keeps_what_it_returns_stops_and_says_so(keeping_list):
    harness, stub, ran = keeping_list("legacy")
    stub.add(*(legacy_item(event(n)) for n in range(450)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert ran == {f"ev-{n}": 1 for n in range(200)}  # the first page, once
    assert (summary["stopped"], summary["level"], summary["pages"], summary["repeated"]) == (
        "not_consumed",
        "error",
        2,
        200,
    )
    assert "same items again" in summary["detail"]


def test_a_window_over_a_page_within_one_millisecond_stops_and_says_so(keeping_list):
    # a 3-minute TTL: a 2-minute lookback, split down to 1 ms within the run's 50 pages
    harness, stub, ran = keeping_list("v1", DINGTALK_DEDUP_TTL_SECONDS="180", DINGTALK_TIMESTAMP_TOLERANCE_SECONDS="60")
    now_ms = int(time.time() * 1000)
    stub.add(*(v1_item(event(n), event_time=now_ms - 1000) for n in range(150)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert ran == {f"ev-{n}": 1 for n in range(100)}
    assert (summary["stopped"], summary["level"]) == ("not_consumed", "error")
    assert "within 1 ms" in summary["detail"]


def test_a_dry_run_over_a_list_that_keeps_what_it_returns_prints_each_item_once(monkeypatch, capsys):
    import io
    import sys
    import types

    from dingtalk_fc_dev import cli as dev_cli

    stub = DingTalkApiStub(APP_KEY, APP_SECRET, clear_on_read=False)
    try:
        stub.add(*(legacy_item(event(n)) for n in range(250)))
        monkeypatch.setitem(sys.modules, "handlers", types.SimpleNamespace(router=Router()))
        environ = {**TEST_ENV, "DINGTALK_APP_SECRET": APP_SECRET, "DINGTALK_OAPI_BASE": stub.base}
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        out = io.StringIO()
        assert dev_cli.main(["recover", "--dry-run"], out) == 0
    finally:
        stub.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event_id"] for line in lines] == [f"ev-{n}" for n in range(200)]  # the page, once
    assert len(stub.calls("/call_back/get_call_back_failed_result")) == 2
    err = capsys.readouterr().err
    assert "200 item(s)" in err
    assert "keeps what it returns; more remain" in err  # the 50 it could not list are not passed over in silence
