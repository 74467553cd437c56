"""Recovery through the real code path: the real DingTalk API client against the local DingTalk
API stub, the real pipeline and store, this file's own routers."""

import collections
import io
import json
import sys
import time
import types

import pytest
from conftest import APP_SECRET, STUB_CREDENTIALS, TEST_ENV, with_canary
from stubs.dingtalk_api import DingTalkApiStub, legacy_item, v1_item
from stubs.fc2_api import FcApiStub

from dingtalk_fc import Event, Router, config, recovery
from dingtalk_fc.records import RecordWriter
from dingtalk_fc_dev import recovery_cli
from dingtalk_fc_dev.testkit import FakeFcContext

APP_KEY = TEST_ENV["DINGTALK_APP_KEY"]


def event(n, event_type="user_add_org"):
    return with_canary({"EventType": event_type, "eventId": f"ev-{n}", "CorpId": "dingcorp0001", "userId": [f"u{n}"]})


def context(timeout=300):
    made = FakeFcContext(request_id="recover-run", function="recover")
    made.function.timeout = timeout
    return made


class Handler:
    """Counts completed runs per key; ``before`` may raise or change the world first."""

    def __init__(self, before=None):
        self.before = before
        self.calls = 0
        self.completed = collections.Counter()

    def __call__(self, received):
        self.calls += 1
        if self.before:
            self.before(received, self.calls)
        self.completed[received.key] += 1


@pytest.fixture
def recovering(make_harness):
    stubs = []

    def make(handler, generation="v1", deferred=False, **environ):
        stub = DingTalkApiStub(APP_KEY, APP_SECRET)
        stubs.append(stub)
        router = Router()
        router.on("user_add_org", "bpms_instance_change", deferred=deferred or None)(handler)
        settings = {
            "DINGTALK_APP_SECRET": APP_SECRET,
            "DINGTALK_API_BASE": stub.base,
            "DINGTALK_OAPI_BASE": stub.base,
            "DINGTALK_RECOVERY_API": generation,
            **environ,
        }
        return make_harness(router, **settings), stub

    yield make
    for stub in stubs:
        stub.close()


def summary_of(harness):
    return [r for r in harness.records if r.get("stage") == "summary"][-1]


def per_event(harness):
    return [r for r in harness.records if r.get("source") == "recovery" and "outcome" in r]


@pytest.mark.parametrize(("generation", "pages"), [("v1", 5), ("legacy", 3)])
def test_450_failed_events_run_once_each_and_a_second_run_pulls_nothing(recovering, generation, pages):
    handler = Handler()
    harness, stub = recovering(handler, generation)
    make = v1_item if generation == "v1" else legacy_item
    stub.add(*(make(event(n)) for n in range(450)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert handler.completed == {f"ev-{n}": 1 for n in range(450)}
    assert {k: summary[k] for k in ("pulled", "handled", "duplicates", "failed", "rejected", "pages", "stopped")} == {
        "pulled": 450,
        "handled": 450,
        "duplicates": 0,
        "failed": 0,
        "rejected": 0,
        "pages": pages,
        "stopped": "drained",
    }
    assert summary["level"] == "info"
    assert summary["token_requests"] == 1
    assert len([r for r in harness.records if r.get("stage") == "pulled"]) == 450  # journaled
    assert collections.Counter(r["outcome"] for r in per_event(harness)) == {"handled": 450}
    second = recovery.recover(harness.runtime, "run-2", context())
    assert (second["pulled"], second["handled"], second["pages"]) == (0, 0, 1)
    assert handler.calls == 450
    assert second["token_requests"] == 1  # the instance kept its token


class InstanceDied(KeyboardInterrupt):
    """What a killed instance is like: the one exception nothing in the function handles (it
    gives the claim up and lets it through)."""


def test_an_instance_dying_mid_batch_loses_no_pulled_event(recovering, redis_url, make_harness):
    def die_at_150(received, calls):
        if calls == 150:
            raise InstanceDied

    first = Handler(die_at_150)
    harness, stub = recovering(
        first,
        DINGTALK_DEDUP_REDIS_URL=redis_url,
        DINGTALK_DEDUP_IN_FLIGHT_SECONDS="1",  # a short lease, so the dead claim lapses soon
        DINGTALK_TIMESTAMP_TOLERANCE_SECONDS="0",  # which needs this below it
    )
    stub.add(*(v1_item(event(n)) for n in range(450)))
    with pytest.raises(InstanceDied):
        recovery.recover(harness.runtime, "run-1", context())
    assert len(stub.pulled) == 200  # two pages are gone from DingTalk's list
    journal = [json.dumps(r) for r in harness.records if r.get("stage") == "pulled"]
    assert len(journal) == 200
    time.sleep(1.1)  # the dead instance's claim on event 149 lapses (DINGTALK_DEDUP_IN_FLIGHT_SECONDS)

    second = Handler()
    router = Router()
    router.on("user_add_org")(second)
    replacement = make_harness(
        router,
        DINGTALK_APP_SECRET=APP_SECRET,
        DINGTALK_API_BASE=stub.base,
        DINGTALK_RECOVERY_API="v1",
        DINGTALK_DEDUP_REDIS_URL=redis_url,
    )
    for _number, kind, job in recovery_cli.redrive_entries(iter(journal)):  # what `redrive FILE` does
        assert kind == "job"
        replacement.run_worker(job, "redrive")
    recovery.recover(replacement.runtime, "run-2", context())  # and the list's remainder
    completed = first.completed + second.completed
    assert completed == {f"ev-{n}": 1 for n in range(450)}


def test_a_token_expiring_mid_run_is_replaced_once(recovering):
    def expire_at_50(received, calls):
        if calls == 50:
            stub.expire_tokens()

    handler = Handler(expire_at_50)
    harness, stub = recovering(handler)
    stub.add(*(v1_item(event(n)) for n in range(450)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert summary["token_requests"] == 2
    assert (summary["pulled"], summary["handled"], summary["stopped"]) == (450, 450, "drained")
    assert len(stub.calls("/v1.0/oauth2/accessToken")) == 2


@pytest.mark.parametrize("generation", ["v1", "legacy"])
def test_a_bad_secret_is_one_clear_error_and_no_retry_storm(recovering, generation):
    handler = Handler()
    harness, stub = recovering(handler, generation, DINGTALK_APP_SECRET="NotTheAppSecret42")
    stub.add(v1_item(event(1)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert harness.records == [summary]
    assert summary["stopped"] == "credentials_rejected"
    assert summary["level"] == "error"
    assert "NotTheAppSecret42" not in json.dumps(summary)
    assert len(stub.requests) == 1
    recovery.recover(harness.runtime, "run-2", context())  # the next timer run: one more try only
    assert len(stub.requests) == 2
    assert handler.calls == 0


@pytest.mark.parametrize(("failure", "stopped"), [("throttle_next", "throttled"), ("fail_next", "unavailable")])
@pytest.mark.parametrize("generation", ["v1", "legacy"])
def test_throttling_and_server_errors_stop_the_run_early_and_say_so(recovering, generation, failure, stopped):
    def fail_after_first_page(received, calls):
        if calls == 1:
            setattr(stub, failure, 1)

    handler = Handler(fail_after_first_page)
    harness, stub = recovering(handler, generation)
    make = v1_item if generation == "v1" else legacy_item
    stub.add(*(make(event(n)) for n in range(450)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    first_page = 100 if generation == "v1" else 200
    assert (summary["stopped"], summary["pages"], summary["pulled"]) == (stopped, 1, first_page)
    assert summary["handled"] == handler.calls == first_page
    assert summary["level"] == "warning"
    assert summary["api_status"] in (200, 403, 500, 502)
    assert summary["detail"]
    assert len(stub.failed) == 450 - first_page  # the next run continues
    assert recovery.recover(harness.runtime, "run-2", context())["stopped"] == "drained"
    assert handler.calls == 450


def test_the_time_budget_stops_the_run_between_pages(recovering):
    clock = [1000.0]

    def takes_a_second(received, calls):
        clock[0] += 1.0

    handler = Handler(takes_a_second)
    harness, stub = recovering(handler, DINGTALK_RECOVERY_BUDGET_SECONDS="300")
    stub.add(*(v1_item(event(n)) for n in range(450)))
    app = harness.runtime.load()
    run = recovery.Recovery(
        app,
        recovery.api_for(config.load_recovery_settings(harness.runtime.environ)),
        config.load_recovery_settings(harness.runtime.environ),
        harness.runtime.records,
        app.settings.max_body_bytes,
        clock=lambda: clock[0],
    )
    summary = run.run("run-1", context())
    # 100 s per page: after two, 100 s are left, less than 1.5 pages' worth: no third page
    assert (summary["stopped"], summary["pages"], summary["pulled"], summary["handled"]) == ("budget", 2, 200, 200)
    assert summary["not_run"] == 0
    assert clock[0] - 1000.0 <= 300
    assert len(stub.failed) == 250


def test_malformed_items_are_rejected_and_never_stop_the_batch(recovering):
    handler = Handler()
    harness, stub = recovering(handler)
    malformed = [
        "not an object",
        {"callBackTag": "user_add_org", "callBackData": "{not json"},
        {"callBackTag": "no such tag!", "callBackData": "{}"},
        {"callBackData": "{}"},
        {"call_back_tag": "user_add_org"},
        {"callBackTag": "user_add_org", "callBackData": json.dumps({"blob": "x" * 200000})},
    ]
    stub.add(v1_item(event(1)), *malformed, v1_item(event(2)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["pulled"], summary["handled"], summary["rejected"]) == (8, 2, 6)
    rejected = [r for r in per_event(harness) if r["outcome"] == "rejected"]
    assert len(rejected) == 6
    assert {r["errcode"] for r in rejected} == {900107, 900112, 900113}
    assert all(r["level"] == "error" for r in rejected)  # deleted by DingTalk, never run: the alert's
    assert summary["level"] == "error"
    assert handler.completed == {"ev-1": 1, "ev-2": 1}


def test_an_event_pushed_and_handled_then_listed_is_a_duplicate(recovering):
    handler = Handler()
    harness, stub = recovering(handler)
    pushed = event(7)
    assert harness.sender.check_reply(*harness.send(pushed)[::2]) == "success"
    stub.add(v1_item(pushed))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["duplicates"], summary["handled"]) == (1, 0)
    assert per_event(harness)[-1]["outcome"] == "duplicate"
    assert handler.calls == 1


def test_deferred_handlers_hand_recovered_events_to_the_worker(recovering, monkeypatch):
    import index

    handler = Handler()
    fc = FcApiStub(lambda payload, rid: index.worker(payload, FakeFcContext(request_id=rid)), STUB_CREDENTIALS)
    try:
        harness, stub = recovering(
            handler, deferred=True, DINGTALK_WORKER_FUNCTION="worker", DINGTALK_FC_ENDPOINT=fc.endpoint
        )
        monkeypatch.setattr(index, "runtime", harness.runtime)
        stub.add(*(v1_item(event(n, "bpms_instance_change")) for n in range(30)))
        summary = recovery.recover(harness.runtime, "run-1", context())
        assert (summary["deferred"], summary["handled"]) == (30, 0)
        fc.wait()
    finally:
        fc.close()
    assert len(fc.accepted()) == 30
    assert handler.completed == {f"ev-{n}": 1 for n in range(30)}
    worker_records = [r for r in harness.records if r.get("stage") == "worker"]
    assert {r["source"] for r in worker_records} == {"recovery"}


def redrive(harness, path):
    """What ``python -m dingtalk_fc_dev redrive FILE`` does, over this harness's pipeline."""
    with open(path, encoding="utf-8") as lines:
        entries = list(recovery_cli.redrive_entries(lines))
    return [harness.run_worker(job, "redrive") for _n, _kind, job in entries]


def test_a_dead_letter_is_recorded_and_redrive_runs_it_once(recovering, monkeypatch, tmp_path):
    import index

    broken = {"fixed": False}

    def fails_until_fixed(received, calls):
        if not broken["fixed"]:
            raise RuntimeError("back end down")

    handler = Handler(fails_until_fixed)
    documents = []

    def worker(payload, rid):
        try:
            return index.worker(payload, FakeFcContext(request_id=rid))
        except Exception:
            if rid.endswith("attempt-3"):  # FC's last retry failed: the on-failure destination
                documents.append(
                    {
                        "timestamp": "2024-05-01T00:00:00.000Z",
                        "requestContext": {
                            "requestId": rid,
                            "functionArn": "acs:fc:cn-hangzhou:123:services/dingtalk-callback.LATEST/functions/worker",
                            "condition": "UnhandledInvocationError",
                            "approximateInvokeCount": 4,
                        },
                        "requestPayload": payload.decode(),
                        "responseContext": {"statusCode": 200, "functionError": "UnhandledInvocationError"},
                        "responsePayload": '{"errorMessage": "back end down"}',
                    }
                )
            raise

    fc = FcApiStub(worker, STUB_CREDENTIALS, retries=3)
    try:
        harness, stub = recovering(
            handler, deferred=True, DINGTALK_WORKER_FUNCTION="worker", DINGTALK_FC_ENDPOINT=fc.endpoint
        )
        monkeypatch.setattr(index, "runtime", harness.runtime)
        stub.add(v1_item(event(1, "bpms_instance_change")))
        recovery.recover(harness.runtime, "run-1", context())
        fc.wait()
    finally:
        fc.close()
    assert handler.calls == 4
    assert handler.completed == {}
    (document,) = documents
    out = io.StringIO()
    record = index.dead_letter(json.dumps(document).encode(), FakeFcContext(request_id="dl-1"), RecordWriter(out))
    assert record["outcome"] == "dead_letter"
    assert record["level"] == "error"
    assert (record["attempts"], record["condition"]) == (4, "UnhandledInvocationError")
    assert "back end down" not in out.getvalue()
    dead_letters = tmp_path / "dead-letters.jsonl"
    dead_letters.write_text(out.getvalue())
    broken["fixed"] = True
    assert redrive(harness, dead_letters) == ["handled"]
    assert redrive(harness, dead_letters) == ["duplicate"]
    assert handler.completed == {"ev-1": 1}


class EchoingDingTalkApi(DingTalkApiStub):
    """DingTalk refusing the token request with a message (and a code) that quotes the app
    secret at ``at``."""

    def __init__(self, at, *args, code="invalidClientSecret"):
        super().__init__(*args)
        self.at, self.code = at, code

    def handle(self, method, target, headers, body):
        if target.startswith("/v1.0/oauth2/accessToken"):
            return 400, self._v1_error(self.code, "m" * self.at + APP_SECRET + " is not valid")
        return super().handle(method, target, headers, body)


def recover_once(make_harness, api):
    """One recovery run over the v1 API served by ``api`` (a DingTalk API stub, closed after it), with
    no handler: its summary."""
    try:
        harness = make_harness(
            Router(), DINGTALK_APP_SECRET=APP_SECRET, DINGTALK_API_BASE=api.base, DINGTALK_RECOVERY_API="v1"
        )
        return recovery.recover(harness.runtime, "run-1", context())
    finally:
        api.close()


@pytest.mark.parametrize("at", [0, 150, 190, 199])
def test_a_secret_dingtalk_echoes_leaves_no_byte_in_the_summary(make_harness, at):
    summary = recover_once(make_harness, EchoingDingTalkApi(at, APP_KEY, APP_SECRET))
    assert summary["stopped"] == "credentials_rejected"
    assert summary["detail"].startswith("HTTP 400 invalidClientSecret: ")
    assert not any(APP_SECRET[:n] in summary["detail"] for n in range(3, len(APP_SECRET) + 1))


def test_a_secret_dingtalk_echoes_in_its_error_code_is_blanked_too(make_harness):
    summary = recover_once(make_harness, EchoingDingTalkApi(0, APP_KEY, APP_SECRET, code="bad." + APP_SECRET))
    assert (summary["stopped"], summary["api_code"]) == ("credentials_rejected", "bad.***")
    assert APP_SECRET[:6] not in json.dumps(summary)


def test_a_recovery_without_the_secret_is_one_error_naming_it(recovering):
    harness, stub = recovering(Handler(), DINGTALK_APP_SECRET=None)
    record = recovery.recover(harness.runtime, "run-1", context())
    assert harness.records == [record]
    assert record["level"] == "error"
    assert record["errcode"] == 900140
    assert "DINGTALK_APP_SECRET" in record["detail"]
    assert stub.requests == []


def test_a_recovered_event_that_fails_again_is_retried_on_the_worker(recovering, monkeypatch):
    """The list was read: DingTalk will not retry it. With a worker, FC's queue holds it."""
    import index

    handler = Handler(lambda received, calls: calls == 1 and (_ for _ in ()).throw(RuntimeError("flaky")))
    fc = FcApiStub(lambda payload, rid: index.worker(payload, FakeFcContext(request_id=rid)), STUB_CREDENTIALS)
    try:
        harness, stub = recovering(handler, DINGTALK_WORKER_FUNCTION="worker", DINGTALK_FC_ENDPOINT=fc.endpoint)
        monkeypatch.setattr(index, "runtime", harness.runtime)
        stub.add(v1_item(event(7)))
        summary = recovery.recover(harness.runtime, "run-1", context())
        fc.wait()
    finally:
        fc.close()
    assert (summary["retried_on_worker"], summary["failed"], summary["level"]) == (1, 0, "info")
    assert handler.completed == {"ev-7": 1}
    retried = {r["stage"]: r["outcome"] for r in harness.records if r.get("stage") in ("retry", "worker")}
    assert retried == {"retry": "deferred", "worker": "handled"}  # in either order: the worker runs at once


def test_a_dead_letter_keeps_a_large_job_whole_and_an_expired_one_needs_the_operators_word(recovering, tmp_path):
    import index

    handler = Handler()
    harness, _stub = recovering(handler)
    big = dict(event(8), comment="x" * 20_000)  # a job far over the 8 KiB record limit
    job = harness.seal_job(Event.from_data(big), "push", "r")
    out = io.StringIO()
    index.dead_letter(job, FakeFcContext(request_id="dl-2"), RecordWriter(out))
    dead_letters = tmp_path / "dead-letters.jsonl"
    dead_letters.write_text(out.getvalue())
    ((_n, _kind, kept),) = recovery_cli.redrive_entries(io.StringIO(out.getvalue()))
    assert kept == job
    later = harness.runtime.load()
    later.jobs._clock = lambda: time.time() + 2 * 86400  # two days later: past the TTL
    with pytest.raises(Exception, match="worker job expired"):
        harness.runtime.run_worker(job, "redrive")
    assert harness.runtime.run_worker(job, "redrive", max_age_s=float("inf")) == "handled"
    assert handler.completed == {"ev-8": 1}


def test_an_item_that_cannot_be_sealed_is_rejected_and_the_page_goes_on(recovering, monkeypatch):
    """A lone surrogate (JSON "\\ud800") seals fine as ASCII; any other per-item failure is a
    rejected record, never the end of a page DingTalk already deleted."""
    handler = Handler()
    harness, stub = recovering(handler)
    odd = v1_item(event(2))
    odd["callBackData"] = json.dumps({**json.loads(odd["callBackData"]), "nickname": "\ud800"})
    stub.add(v1_item(event(1)), odd, *(v1_item(event(n)) for n in range(3, 8)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["pulled"], summary["handled"], summary["rejected"]) == (7, 7, 0)
    assert handler.completed == {f"ev-{n}": 1 for n in range(1, 8)}

    jobs = harness.runtime.load().jobs
    seal = jobs.seal
    monkeypatch.setattr(
        jobs, "seal", lambda text, *a: (_ for _ in ()).throw(ValueError()) if '"ev-9"' in text else seal(text, *a)
    )
    stub.add(*(v1_item(event(n)) for n in range(8, 11)))
    summary = recovery.recover(harness.runtime, "run-2", context())
    assert (summary["pulled"], summary["handled"], summary["rejected"]) == (3, 2, 1)
    assert per_event(harness)[-3]["errcode"] == 900199  # the rejected one, journaled before the others ran


def test_a_failure_inside_the_run_is_one_error_record_not_an_exception(recovering, monkeypatch):
    harness, stub = recovering(Handler())
    stub.add(v1_item(event(1)))
    monkeypatch.setattr(recovery, "process", lambda *a, **k: 1 / 0)
    record = recovery.recover(harness.runtime, "run-1", context())
    assert (record["stopped"], record["level"], record["detail"]) == ("internal_error", "error", "ZeroDivisionError")
    assert summary_of(harness) == record


def test_a_recovered_event_in_flight_without_a_worker_is_a_failure_to_redrive(recovering):
    """Its push's instance died mid-handler: nobody runs it when the dead claim lapses."""
    handler = Handler()
    harness, stub = recovering(handler)
    harness.runtime.load().dispatcher.once.store.claim(APP_KEY + ":ev-1", 900)  # the dead instance's claim
    stub.add(v1_item(event(1)))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["failed"], summary["in_flight"], summary["level"]) == (1, 0, "error")
    (record,) = per_event(harness)
    assert (record["outcome"], record["level"]) == ("in_flight", "error")
    assert "redrive it from the journal" in record["detail"]
    assert handler.calls == 0


@pytest.fixture
def cli(monkeypatch, capsys):
    """Runs ``python -m dingtalk_fc_dev ARGS`` in-process over ``router`` as ``handlers.py``."""
    from dingtalk_fc_dev import cli as dev_cli

    def run(router, *args, **environ):
        monkeypatch.setitem(sys.modules, "handlers", types.SimpleNamespace(router=router))
        for name, value in {**TEST_ENV, **environ}.items():
            monkeypatch.setenv(name, value)
        out = io.StringIO()
        status = dev_cli.main(list(args), out)
        capsys.readouterr()  # the records, on stderr
        return status, out.getvalue()

    return run


def test_a_rejected_item_is_kept_sealed_and_redrive_runs_it_once_the_limit_allows(recovering, cli, tmp_path):
    handler = Handler()
    harness, stub = recovering(handler)
    big = {**event(2, "bpms_instance_change"), "form": "x" * 70000}  # over the default 64 KiB
    stub.add(v1_item(event(1)), v1_item(big))
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert (summary["rejected"], stub.failed) == (1, [])
    (rejected,) = [r for r in harness.records if r.get("outcome") == "rejected"]
    assert "x" * 100 not in harness.log.getvalue()  # kept encrypted
    export = tmp_path / "rejected.jsonl"
    export.write_text(json.dumps(rejected) + "\n")
    assert cli(Router(), "redrive", str(export)) == (
        1,
        f"FAIL {export}:1: body too large ({rejected['detail']})\nredrive: 1 entries: 1 rejected\n",
    )
    router = Router()
    router.on("bpms_instance_change")(handler)
    status, out = cli(router, "redrive", str(export), DINGTALK_MAX_BODY_BYTES="122880")
    assert (status, out) == (0, "redrive: 1 entries: 1 handled\n")
    assert handler.completed == {"ev-1": 1, "ev-2": 1}


def test_a_rejected_items_sealed_copy_never_opens_as_a_worker_job(recovering, monkeypatch, cli, tmp_path):
    """A sealed item and a job share the keys: what each is for is bound in, both ways."""
    import index

    handler = Handler()
    harness, stub = recovering(handler, deferred=True, DINGTALK_WORKER_FUNCTION="worker")
    monkeypatch.setattr(index, "runtime", harness.runtime)
    refused = {**v1_item(event(1, "bpms_instance_change")), "EventType": "bpms_instance_change", "callBackData": 7}
    stub.add(refused)
    summary = recovery.recover(harness.runtime, "run-1", context())
    assert summary["rejected"] == 1
    (rejected,) = [r for r in harness.records if r.get("outcome") == "rejected"]
    with pytest.raises(Exception, match="worker job not authentic"):
        index.worker(rejected["sealed_item"].encode(), FakeFcContext("w"))
    assert harness.last_record["errcode"] == 900150
    assert handler.calls == 0
    job = harness.seal_job(Event.from_data(event(2)), "recovery", "r")
    as_item = tmp_path / "as-item.jsonl"
    as_item.write_text(json.dumps({"sealed_item": job.decode()}) + "\n")
    assert cli(Router(), "redrive", str(as_item)) == (
        1,
        f"FAIL {as_item}:1: worker job not authentic (not a job envelope)\nredrive: 1 entries: 1 rejected\n",
    )


def test_redrive_reports_what_a_deferred_handler_did_before_it_exits(cli, tmp_path):
    """The command must not exit under a deferred handler, nor call "deferred" a success."""
    ran = []

    def slow(received):
        time.sleep(0.3)  # a slow back end: why the handler is deferred
        if received.key == "ev-2":
            raise RuntimeError("back end down")
        ran.append(received.key)

    router = Router()
    router.on("bpms_instance_change", deferred=True)(slow)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(v1_item(event(n, "bpms_instance_change"))) + "\n" for n in (1, 2)))
    status, out = cli(router, "redrive", str(items))
    assert ran == ["ev-1"]
    assert (status, out) == (1, "redrive: 2 entries: 1 failed, 1 handled\n")
