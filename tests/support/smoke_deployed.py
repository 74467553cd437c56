"""Run by an old interpreter (Python 3.6) against the deployed modules only.

Usage: python3.6 smoke_deployed.py — with the function package (or the project root plus its
dependencies) on PYTHONPATH. Encrypts and signs a check_url and an event with the deployed
cipher, sends them through ``index.handler`` and prints a JSON summary on stdout.
Written for Python 3.6: no testkit, no f-string features newer than 3.6.
"""

import io
import json
import os
import sys

TOKEN, AES_KEY, APP_KEY = "smokeToken36", "q7JbXwJ4m2Zk9sPcVdT0fR8nLgYhE3uA6iOoKl1MxN5", "dingsmoketest0000001"
os.environ.update(DINGTALK_TOKEN=TOKEN, DINGTALK_AES_KEY=AES_KEY, DINGTALK_APP_KEY=APP_KEY)
if len(sys.argv) > 1:
    os.environ["DINGTALK_DEDUP_REDIS_URL"] = sys.argv[1]

import types  # noqa: E402

import dingtalk_crypto  # noqa: E402
from dingtalk_fc import Router  # noqa: E402

# The product's smoke test runs its own router, not the package's handlers.py (a team's handlers
# may do anything); tests/test_deployment.py imports the package's handlers separately.
handlers = types.ModuleType("handlers")
handlers.router = Router()
handlers.router.on("user_add_org")(lambda event: None)
sys.modules["handlers"] = handlers

import index  # noqa: E402


def deliver(plaintext):
    sender = dingtalk_crypto.DingTalkCrypto(TOKEN, AES_KEY, APP_KEY)
    encrypt = sender.encrypt(plaintext)
    timestamp, nonce = sender.timestamp_ms(), sender.new_nonce()
    query = f"msg_signature={sender.signature(timestamp, nonce, encrypt)}&timestamp={timestamp}&nonce={nonce}"
    body = json.dumps({"encrypt": encrypt}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    captured = {}

    def start_response(status, headers):
        captured["status"] = status

    reply = json.loads(b"".join(index.handler(environ, start_response)).decode())
    ok = sender.is_valid_signature(reply["msg_signature"], reply["timeStamp"], reply["nonce"], reply["encrypt"])
    return {"status": captured["status"], "signature_ok": ok, "message": sender.decrypt(reply["encrypt"])}


index.initializer(None)
results = {
    "python": "{}.{}".format(*sys.version_info[:2]),
    "crypto_module": os.path.dirname(dingtalk_crypto.__file__),
    "check_url": deliver('{"EventType":"check_url"}'),
    "event": deliver('{"EventType":"user_add_org","eventId":"smoke-1","userId":["u1"]}'),
    "duplicate": deliver('{"EventType":"user_add_org","eventId":"smoke-1","userId":["u1"]}'),
    "redis_loaded": "redis" in sys.modules,
}
sys.stderr.flush()
print("SMOKE " + json.dumps(results))
