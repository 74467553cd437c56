"""``index.dead_letter``, the worker's on-failure destination: every delivery becomes one error
record that keeps what an operator groups and re-drives by, whatever the document holds."""

import io
import json

import pytest
from conftest import with_canary

from dingtalk_fc import Event
from dingtalk_fc.records import RecordWriter
from dingtalk_fc_dev.testkit import FakeFcContext


def destination_document(job: bytes) -> dict:
    """What FC hands the on-failure destination after the worker's last attempt failed."""
    return {
        "timestamp": "2024-05-01T00:00:00.000Z",
        "requestContext": {
            "requestId": "worker-req-7",
            "functionArn": "acs:fc:cn-hangzhou:123:services/dingtalk-callback.LATEST/functions/worker",
            "condition": "UnhandledInvocationError",
            "approximateInvokeCount": 4,
        },
        "requestPayload": job.decode(),
        "responseContext": {"statusCode": 200, "functionError": "UnhandledInvocationError"},
        "responsePayload": '{"errorMessage": "back end down"}',
    }


def dead_letter(document) -> tuple:
    import index

    out = io.StringIO()
    returned = index.dead_letter(document, FakeFcContext(request_id="dl-1"), RecordWriter(out))
    (line,) = out.getvalue().splitlines()
    return returned, json.loads(line)


def test_a_dead_letter_with_a_large_job_keeps_what_the_query_groups_by(make_harness):
    harness = make_harness()
    big = with_canary({"EventType": "bpms_instance_change", "eventId": "ev-big", "form": "x" * 20000})
    job = harness.seal_job(Event.from_data(big), "push", "handoff-req-1")
    _returned, written = dead_letter(json.dumps(destination_document(job)).encode())
    assert written["truncated"] is True  # over the record limit: cut to the essentials
    assert json.loads(written["job"]) == json.loads(job)  # the job whole, for redrive
    assert {name: written.get(name) for name in ("deferred_by", "condition", "attempts")} == {
        "deferred_by": "handoff-req-1",
        "condition": "UnhandledInvocationError",
        "attempts": 4,
    }
    assert written["worker_request_id"] == "worker-req-7"


@pytest.mark.parametrize("depth", [10000, 200000])
def test_a_deeply_nested_document_is_still_one_record(depth):
    nested = ("[" * depth + "]" * depth).encode()
    wrapper = ('{"requestPayload": ' + "[" * depth + "]" * depth + "}").encode()
    for document in (nested, wrapper, nested.decode()):
        returned, written = dead_letter(document)
        assert (written["outcome"], written["level"]) == ("dead_letter", "error")
        assert "no worker job" in written["detail"]
        assert returned == written
