"""FC 2.0 adapter: PEP 3333 WSGI, as FC's ``python3`` runtime calls HTTP functions."""

import re

from . import errors
from .callback import ALLOWED_METHODS, CallbackRequest, misconfigured, refusal
from .config import ConfigError
from .context import FC2, request_id_of
from .errors import RequestRejected
from .runtime import Runtime

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Dict, Iterable, List, Tuple

    StartResponse = Callable[[str, List[Tuple[str, str]]], Any]

CONTENT_LENGTH_PATTERN = re.compile(r"[0-9]{1,18}\Z")
JSON_HEADERS = [("Content-Type", "application/json")]
ALLOW_HEADER = ("Allow", ALLOWED_METHODS)


def read_body(environ: "Dict[str, Any]", limit: int) -> bytes:
    """The request body, refused with 413 before reading when it exceeds ``limit`` bytes."""
    raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ.get("wsgi.input")
    if raw_length:
        if not CONTENT_LENGTH_PATTERN.match(raw_length):
            raise RequestRejected(errors.INVALID_CONTENT_LENGTH)
        length = int(raw_length)
        if length > limit:
            raise RequestRejected(errors.BODY_TOO_LARGE, detail=f"{length} bytes")
        body = stream.read(length) if length and stream is not None else b""
        if len(body) != length:
            raise RequestRejected(errors.INVALID_CONTENT_LENGTH, detail="body shorter than declared")
        return body
    if environ.get("wsgi.input_terminated") and stream is not None:  # chunked: read up to the limit
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestRejected(errors.BODY_TOO_LARGE)
        return body
    return b""  # PEP 3333: no CONTENT_LENGTH means no body


# Every status the function answers with (a dict: importing http.HTTPStatus costs cold start).
STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    413: "413 Payload Too Large",
    414: "414 URI Too Long",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


def status_line(status: int) -> str:
    return STATUS_LINES.get(status) or f"{status} Error"


def serve(runtime: Runtime, environ: "Dict[str, Any]", start_response: "StartResponse") -> "Iterable[bytes]":
    """Answer one WSGI request through ``runtime``'s callback."""
    context = environ.get("fc.context")
    request_id = request_id_of(context)
    method = environ.get("REQUEST_METHOD", "GET").upper()
    try:
        app = runtime.load(FC2)
        body = read_body(environ, app.settings.max_body_bytes) if method == "POST" else b""
    except ConfigError as error:
        response = misconfigured(runtime.records, error, request_id)
    except RequestRejected as rejection:
        response = refusal(runtime.records, rejection, request_id)
    else:
        query = environ.get("QUERY_STRING") or ""
        response = app.callback.handle(CallbackRequest(method, query, body, request_id, context))
    headers = JSON_HEADERS if response.status != 405 else [*JSON_HEADERS, ALLOW_HEADER]
    start_response(status_line(response.status), list(headers))
    return [response.body if method != "HEAD" else b""]
