"""Function Compute entrypoints. The handlers themselves live in ``handlers.py``.

* ``handler(environ, start_response)``: FC 2.0 HTTP function (WSGI), ``Handler: index.handler``;
* ``initializer(context)``: reads and validates the configuration once per instance;
* ``worker(event, context)``: the worker function that runs deferred handlers;
* ``fc3_handler(event, context)``: FC 3.0 built-in runtimes' HTTP trigger;
* ``recover(event, context)``: the timer function that pulls DingTalk's failed-push list;
* ``dead_letter(event, context)``: the worker's on-failure destination.
"""

from dingtalk_fc import http_fc2, packaged_settings
from dingtalk_fc.context import request_id_of
from dingtalk_fc.runtime import Runtime

packaged_settings.apply()  # before handlers.py, which may read its own variables at import

from handlers import router  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, Iterable

runtime = Runtime(router)


def initializer(context: "Any") -> None:
    runtime.start()


def handler(environ: "Dict[str, Any]", start_response: "http_fc2.StartResponse") -> "Iterable[bytes]":
    return http_fc2.serve(runtime, environ, start_response)


def worker(event: bytes, context: "Any") -> str:
    return runtime.run_worker(event, request_id_of(context), context)


def fc3_handler(event: bytes, context: "Any") -> "Dict[str, Any]":
    from dingtalk_fc import http_fc3  # FC 3.0 only: not imported by FC 2.0 cold starts

    return http_fc3.serve(runtime, event, context)


def recover(event: "Any", context: "Any") -> "Dict[str, Any]":
    from dingtalk_fc import recovery  # recovery only: not imported by the callback's cold start

    return recovery.recover(runtime, request_id_of(context), context)


def dead_letter(event: "Any", context: "Any", records: "Any" = None) -> "Dict[str, Any]":
    from dingtalk_fc.dead_letter import record_dead_letter

    return record_dead_letter(event, request_id_of(context), records or runtime.records)
