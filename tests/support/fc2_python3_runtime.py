"""FC 2.0's python3 runtime, as far as an HTTP function sees it: run by Python 3.6 with ``-S``
(no site-packages) from inside an unpacked code package, nothing else on ``sys.path``.

    cd CODE && python3.6 -S fc2_python3_runtime.py REQUESTS REPLIES

Imports ``index`` as the runtime does, calls ``index.initializer`` once with an FC context,
then ``index.handler`` (WSGI) for each request of REQUESTS (one JSON object per line: method,
query, body) with ``fc.context`` and ``fc.request_uri`` in the environ, and writes each answer
(status, body) as a line of REPLIES. The function's own stdout (its records) goes to stdout.
Written for Python 3.6.
"""

import io
import json
import os
import sys


class Namespace:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def context(request_id):
    """The attributes FC's python3 runtime gives ``fc.context`` (placeholder STS credentials)."""
    return Namespace(
        request_id=request_id,
        account_id=os.environ.get("FC_ACCOUNT_ID", ""),
        region=os.environ.get("FC_REGION", ""),
        credentials=Namespace(access_key_id="", access_key_secret="", security_token=""),
        service=Namespace(name="dingtalk-callback", log_project="", log_store="", qualifier="LATEST", version_id=""),
        function=Namespace(
            name="callback", handler="index.handler", memory=256, timeout=30, initializer="index.initializer"
        ),
    )


def call(application, environ):
    """One WSGI call: the status line and the body."""
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status

    answer = b"".join(application(environ, start_response))
    sys.stdout.flush()
    return captured["status"], answer


def main(requests_path, replies_path):
    sys.path[0] = os.getcwd()  # FC's code directory (/code) instead of this script's
    import index

    index.initializer(context("initializer"))
    with open(requests_path) as requests, open(replies_path, "w") as replies:
        for number, line in enumerate(requests):
            request = json.loads(line)
            body = request["body"].encode()
            environ = {
                "REQUEST_METHOD": request["method"],
                "PATH_INFO": "/",
                "QUERY_STRING": request["query"],
                "CONTENT_LENGTH": str(len(body)),
                "CONTENT_TYPE": "application/json",
                "wsgi.input": io.BytesIO(body),
                "fc.context": context(f"request-{number}"),
                "fc.request_uri": "/?" + request["query"],
            }
            status, answer = call(index.handler, environ)
            replies.write(json.dumps({"status": status, "body": answer.decode()}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
