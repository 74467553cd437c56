"""The worker's on-failure destination: a job FC gave up on becomes one error record.

FC invokes the destination function with a JSON document wrapping the original invocation:
``{"timestamp", "requestContext": {"requestId", "functionArn", "condition",
"approximateInvokeCount"}, "requestPayload": "<the job, as sent>", "responseContext":
{"statusCode", "functionError"}, "responsePayload": "<the error>"}``. The same function also
accepts a bare job (an MNS message body, or a manual invocation).

The record keeps the job exactly as the worker got it — the event still encrypted with the
app's key — so ``python -m dingtalk_fc_dev redrive`` can run it again from an export of these
records. FC's ``responsePayload`` is not logged: an exception's message may quote event data.
Nothing here reads the configuration, so a dead letter is recorded even when the function's
environment is broken.
"""

import base64
import binascii
import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, Optional

    from .records import RecordWriter

SOURCE = "dead_letter"
MAX_FIELD_CHARS = 256


def _json(raw: "Any") -> "Any":
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", "replace")
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # nested too deeply to be FC's document or a job
        return None


def _job(payload: "Any") -> "Optional[Dict[str, Any]]":
    """The worker job (see :mod:`dingtalk_fc.jobs`) in ``payload``: an object, its JSON text,
    or that text in base64. Authenticity is checked where the job runs, not here."""
    parsed = _json(payload)
    if parsed is None and isinstance(payload, str):
        try:
            parsed = _json(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            parsed = None
    if isinstance(parsed, dict) and "dingtalk_fc_job" in parsed and isinstance(parsed.get("sealed"), str):
        return parsed
    return None


def _short(value: "Any") -> "Any":
    if isinstance(value, str):
        return value[:MAX_FIELD_CHARS]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def dead_letter_record(event: "Any", request_id: str) -> "Dict[str, Any]":
    """The error record for one delivery of FC's on-failure destination."""
    record: Dict[str, Any] = {
        "request_id": request_id,
        "source": SOURCE,
        "outcome": "dead_letter",
        "level": "error",
    }
    wrapper = _json(event)
    job = None
    if isinstance(wrapper, dict) and "requestPayload" in wrapper:
        context = wrapper.get("requestContext")
        if isinstance(context, dict):
            record["worker_request_id"] = _short(context.get("requestId"))
            record["function"] = _short(context.get("functionArn"))
            record["condition"] = _short(context.get("condition"))
            record["attempts"] = _short(context.get("approximateInvokeCount"))
        response = wrapper.get("responseContext")
        if isinstance(response, dict):
            record["function_error"] = _short(response.get("functionError"))
        job = _job(wrapper["requestPayload"])
    elif wrapper is not None:
        job = _job(wrapper)
    if job is None:
        size = len(event) if isinstance(event, (bytes, bytearray, str)) else 0
        record["detail"] = f"no worker job in the payload ({size} bytes): see FC's invocation log"
        return {key: value for key, value in record.items() if value is not None}
    record["job_source"] = _short(job.get("source"))
    record["deferred_by"] = _short(job.get("request_id"))
    record["job"] = json.dumps(job, separators=(",", ":"))
    return {key: value for key, value in record.items() if value is not None}


def record_dead_letter(event: "Any", request_id: str, records: "RecordWriter") -> "Dict[str, Any]":
    record = dead_letter_record(event, request_id)
    records.write(record)
    return record
