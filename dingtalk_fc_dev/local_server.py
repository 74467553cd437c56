"""``make run``: serve ``index.handler`` over HTTP on 127.0.0.1, as FC would call it.

Each request gets an FC-like environ (``fc.context`` with a fresh request id, placeholder
credentials, ``fc.request_uri``). Credentials come from the DINGTALK_* environment variables,
or else the embedded demo ones, which it prints. Deferred handlers run in a thread of this
process, standing in for the worker function. Ctrl-C stops it. ``--handlers MODULE`` serves
another module's ``router`` instead of ``handlers.py`` (the product's own tests use it).
A misconfiguration or a port in use is one line on stderr and exit status 2.
"""

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import uuid
from socketserver import ThreadingMixIn
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from dingtalk_fc import http_fc2
from dingtalk_fc.config import ConfigError
from dingtalk_fc.context import FC2
from dingtalk_fc.router import Router
from dingtalk_fc.runtime import Runtime

from .demo import DEMO_ENVIRONMENT, IncompleteCredentials, credentials_from
from .testkit import FakeFcContext, ThreadDeferrer

DEFAULT_PORT = 9000
EXIT_USAGE = 2


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    """No access log: the function writes its own record per request (query strings stay out)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def fc_app(handler: Any) -> Any:
    """Wrap an FC WSGI handler so each request carries an FC-like ``fc.context``."""

    def app(environ: Dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["fc.context"] = FakeFcContext(request_id=str(uuid.uuid4()))
        query = environ.get("QUERY_STRING")
        environ["fc.request_uri"] = environ.get("PATH_INFO", "/") + ("?" + query if query else "")
        return handler(environ, start_response)

    return app


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the server, even where a parent shell started it ignoring SIGINT."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, raise_interrupt)
    signal.signal(signal.SIGTERM, raise_interrupt)


def load_function(handlers_module: Optional[str]) -> Tuple[Runtime, Callable[..., Iterable[bytes]], Router]:
    """The runtime, WSGI handler and router to serve: ``index``'s (over ``handlers.router``), or
    one over ``handlers_module.router``."""
    if handlers_module is None:
        import index  # after the environment is complete: the function reads it once

        return index.runtime, index.handler, importlib.import_module("handlers").router
    router = importlib.import_module(handlers_module).router
    runtime = Runtime(router)

    def handler(environ: Dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return http_fc2.serve(runtime, environ, start_response)

    return runtime, handler, router


def handler_lines(router: Router, module: str) -> List[str]:
    """The banner's list of what answers which EventType, so a typo in ``@router.on`` shows."""
    lines = [f"handlers in {module}.py:"]
    by_handler = {}  # type: Dict[Tuple[str, bool], List[str]]
    for event_type, route in router.registered():
        name = getattr(route.handler, "__name__", repr(route.handler))
        by_handler.setdefault((name, bool(route.deferred)), []).append(event_type or "any other EventType")
    for (name, deferred), event_types in by_handler.items():
        lines.append(f"  {name}{' (deferred: runs on the worker)' if deferred else ''}: {', '.join(event_types)}")
    if len(lines) == 1:
        lines.append("  none: every event is acknowledged as unhandled")
    return lines


def fail(message: str) -> int:
    print("error: " + message, file=sys.stderr)
    return EXIT_USAGE


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT))
    parser.add_argument("--handlers", metavar="MODULE", help="serve MODULE.router instead of handlers.py")
    args = parser.parse_args(argv)

    try:
        credentials = credentials_from(os.environ)
    except IncompleteCredentials as error:
        return fail(f"{error}; not starting")
    os.environ.update(credentials)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    runtime, handler, router = load_function(args.handlers)
    runtime.use_deferrer(ThreadDeferrer(runtime.run_worker))  # FC's asynchronous invocation, in threads
    try:
        runtime.load(FC2)  # the configuration error the function would answer 500 with
    except ConfigError as error:
        return fail(f"configuration error: {error}; not starting")
    try:
        server = make_server(args.host, args.port, fc_app(handler), ThreadingServer, QuietHandler)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        return fail(f"port {args.port} on {args.host} is already in use: stop what holds it, or set PORT=<another>")
    url = f"http://{args.host}:{server.server_address[1]}/"
    if credentials == DEMO_ENVIRONMENT:
        print("using the embedded demo credentials (set DINGTALK_* to use your own):", file=sys.stderr)
        for name, value in credentials.items():
            print(f"  {name}={value}", file=sys.stderr)
    else:
        print("using DINGTALK_TOKEN, DINGTALK_AES_KEY and DINGTALK_APP_KEY from the environment", file=sys.stderr)
    for line in handler_lines(router, (args.handlers or "handlers").replace(".", "/")):
        print(line, file=sys.stderr)
    print("listening on " + url, file=sys.stderr)
    print("try it:  .venv/bin/python -m dingtalk_fc_dev check-url " + url, file=sys.stderr)
    print("         .venv/bin/python -m dingtalk_fc_dev trigger user_add_org --url " + url, file=sys.stderr)
    sys.stderr.flush()
    _stop_on_signals()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
