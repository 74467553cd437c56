"""Run by Python 3.10 against the python3.10 package only: FC 3.0's entrypoint end to end.

Usage: python3.10 smoke_fc3.py FC3_ENDPOINT — with the package on sys.path. Sends a check_url and
a deferred event through ``index.fc3_handler`` (FC 3.0's HTTP event shape), the second deferred
to the FC 3.0 invoke API at FC3_ENDPOINT; prints a JSON summary on stdout.
"""

import json
import os
import sys
import types

TOKEN, AES_KEY, APP_KEY = "smokeTokenFc3", "q7JbXwJ4m2Zk9sPcVdT0fR8nLgYhE3uA6iOoKl1MxN5", "dingsmoketest0000003"
os.environ.update(
    DINGTALK_TOKEN=TOKEN,
    DINGTALK_AES_KEY=AES_KEY,
    DINGTALK_APP_KEY=APP_KEY,
    DINGTALK_FC_VERSION="3.0",
    DINGTALK_WORKER_FUNCTION="dingtalk-worker",
    DINGTALK_FC_ENDPOINT=sys.argv[1],
)

import dingtalk_crypto  # noqa: E402
from dingtalk_fc import Router  # noqa: E402

# Its own router, not the package's handlers.py (a team's handlers may do anything), as in
# smoke_deployed.py: user_add_org is deferred, so the event is deferred.
handlers = types.ModuleType("handlers")
handlers.router = Router()
handlers.router.on("user_add_org", deferred=True)(lambda event: None)
sys.modules["handlers"] = handlers

import index  # noqa: E402


class Namespace:
    def __init__(self, **fields):
        self.__dict__.update(fields)


CONTEXT = Namespace(
    request_id="1-smoke-fc3",
    account_id="1234567890",
    region="cn-hangzhou",
    credentials=Namespace(access_key_id="STS.smoke", access_key_secret="smoke-secret", security_token="smoke-token"),
)


def deliver(plaintext):
    sender = dingtalk_crypto.DingTalkCrypto(TOKEN, AES_KEY, APP_KEY)
    encrypt = sender.encrypt(plaintext)
    timestamp, nonce = sender.timestamp_ms(), sender.new_nonce()
    query = {"msg_signature": sender.signature(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
    event = {
        "version": "v1",
        "rawPath": "/",
        "body": json.dumps({"encrypt": encrypt}),
        "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"},
        "queryParameters": query,
        "requestContext": {"http": {"method": "POST", "path": "/"}, "requestId": CONTEXT.request_id},
    }
    response = index.fc3_handler(json.dumps(event).encode(), CONTEXT)
    if response["statusCode"] != 200:
        return {"status": response["statusCode"], "body": response["body"]}
    reply = json.loads(response["body"])
    ok = sender.is_valid_signature(reply["msg_signature"], reply["timeStamp"], reply["nonce"], reply["encrypt"])
    return {"status": 200, "signature_ok": ok, "message": sender.decrypt(reply["encrypt"])}


index.initializer(CONTEXT)
results = {
    "python": "{}.{}".format(*sys.version_info[:2]),
    "check_url": deliver('{"EventType":"check_url"}'),
    "event": deliver('{"EventType":"user_add_org","eventId":"smoke-fc3-1","userId":["u1"]}'),
    "fc2_loaded": "fc2" in sys.modules,
}
sys.stderr.flush()
print("SMOKE " + json.dumps(results))
