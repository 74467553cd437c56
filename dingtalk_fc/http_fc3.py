"""FC 3.0 adapter: built-in runtimes deliver an HTTP trigger request as a JSON event."""

import json
from urllib.parse import urlencode

from dingtalk_crypto import InvalidBase64Error, decode_base64_strictly

from . import errors
from .callback import ALLOWED_METHODS, CallbackRequest, misconfigured, refusal
from .config import ConfigError
from .context import FC3, request_id_of
from .errors import RequestRejected
from .runtime import Runtime

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict

JSON_HEADERS = {"Content-Type": "application/json"}


def _body(event: "Dict[str, Any]", limit: int) -> bytes:
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise RequestRejected(errors.BODY_NOT_JSON)
    if event.get("isBase64Encoded"):
        if len(body) > (limit + 2) // 3 * 4 + 4:
            raise RequestRejected(errors.BODY_TOO_LARGE)
        try:
            raw = decode_base64_strictly(body)
        except InvalidBase64Error:
            raise RequestRejected(errors.BODY_NOT_JSON) from None
    else:
        raw = body.encode("utf-8", "surrogatepass")
    if len(raw) > limit:
        raise RequestRejected(errors.BODY_TOO_LARGE, detail=f"{len(raw)} bytes")
    return raw


def _query(event: "Dict[str, Any]") -> str:
    parameters = event.get("queryParameters") or {}
    if not isinstance(parameters, dict):
        return ""
    # surrogatepass: a lone surrogate survives to fail the signature check, not the adapter
    pairs = [(str(name), str(value)) for name, value in parameters.items()]
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass")


def serve(runtime: Runtime, event: "Any", context: "Any") -> "Dict[str, Any]":
    """Answer one FC 3.0 HTTP-trigger event through ``runtime``'s callback."""
    request_id = request_id_of(context)
    method = ""
    try:
        app = runtime.load(FC3)
        parsed = json.loads(event)
        if not isinstance(parsed, dict):
            raise ValueError("event is not an object")
        method = str(((parsed.get("requestContext") or {}).get("http") or {}).get("method", "GET")).upper()
        body = _body(parsed, app.settings.max_body_bytes) if method == "POST" else b""
    except ConfigError as error:
        response = misconfigured(runtime.records, error, request_id)
    except RequestRejected as rejection:
        response = refusal(runtime.records, rejection, request_id)
    except (ValueError, TypeError, AttributeError):
        malformed = RequestRejected(errors.BODY_NOT_JSON, detail="malformed FC event")
        response = refusal(runtime.records, malformed, request_id)
    else:
        response = app.callback.handle(CallbackRequest(method, _query(parsed), body, request_id, context))
    headers = dict(JSON_HEADERS)
    if response.status == 405:
        headers["Allow"] = ALLOWED_METHODS
    return {
        "statusCode": response.status,
        "headers": headers,
        "isBase64Encoded": False,
        "body": response.body.decode("utf-8") if method != "HEAD" else "",
    }
