"""A local HTTP server that speaks Function Compute's management API (2016-08-15) as far as
``fun deploy`` uses it: services, functions (code included), triggers, asynchronous invocation
configurations and custom domains. It checks what FC checks: the signature and Content-MD5 of
every request, names that exist (404 with FC's error codes, then POST to create, PUT to update)
and an on-failure destination that names an existing function of this account and region.

Its state can be saved to and loaded from a folder, so a redeploy in a second process (a second
``unshare -rn``) meets what the first one created; uploaded zips are kept there as files.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from stubs.fc2_api import fc_signature
from stubs.loopback import LoopbackServer

PREFIX = "/2016-08-15"
SERVICE = r"/services/(?P<service>[^/.]+)(?:\.(?P<qualifier>[^/]+))?"
FUNCTION = SERVICE + r"/functions/(?P<function>[^/]+)"
ROUTES = [
    ("services", re.compile(r"^/services$")),
    ("service", re.compile(r"^" + SERVICE + r"$")),
    ("functions", re.compile(r"^" + SERVICE + r"/functions$")),
    ("function", re.compile(r"^" + FUNCTION + r"$")),
    ("triggers", re.compile(r"^" + FUNCTION + r"/triggers$")),
    ("trigger", re.compile(r"^" + FUNCTION + r"/triggers/(?P<trigger>[^/]+)$")),
    ("async_config", re.compile(r"^" + FUNCTION + r"/async-invoke-config$")),
    ("domains", re.compile(r"^/custom-domains$")),
    ("domain", re.compile(r"^/custom-domains/(?P<domain>[^/]+)$")),
]
DESTINATION = re.compile(
    r"^acs:fc:(?P<region>[^:]+):(?P<account>[^:]+):services/(?P<service>[^/.]+)\.[^/]+/functions/(?P<function>[^/]+)$"
)
MISSING = {
    "service": "ServiceNotFound",
    "function": "FunctionNotFound",
    "trigger": "TriggerNotFound",
    "domain": "DomainNameNotFound",
    "async_config": "AsyncConfigNotExists",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FcDeployApi(LoopbackServer):
    """``credentials``: access key id -> secret; ``state_dir`` keeps state and zips between runs."""

    def __init__(
        self, credentials: Dict[str, str], account_id: str, region: str, state_dir: str, port: int = 0
    ) -> None:
        self.credentials = credentials
        self.account_id, self.region = account_id, region
        self.state_dir = state_dir
        self.lock = threading.Lock()
        self.state = {"services": {}, "functions": {}, "triggers": {}, "async_configs": {}, "domains": {}, "log": []}
        path = os.path.join(state_dir, "state.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as source:
                self.state = json.load(source)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                body = self.read_body()
                status, answer = api.answer(self.command, self.path, dict(self.headers.items()), body)
                payload = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-fc-request-id", "stub-deploy-" + str(len(api.state["log"])))
                self.end_headers()
                self.wfile.write(payload)

            def read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_POST = do_PUT = do_DELETE = handle_any

        self.serve(Handler, port)

    def close(self) -> None:
        super().close()
        with open(os.path.join(self.state_dir, "state.json"), "w", encoding="utf-8") as out:
            json.dump(self.state, out, indent=1)

    # -- the protocol ---------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: Dict[str, str], body: bytes) -> Tuple[int, Any]:
        lowered = {name.lower(): value for name, value in headers.items()}
        path = urlsplit(raw_path).path
        entry = {"method": method, "path": path, "chunked": lowered.get("transfer-encoding") == "chunked"}
        try:
            self.authenticate(method, path, lowered, body)
            if not path.startswith(PREFIX):
                raise ApiError(404, "PathNotSupported")
            payload = json.loads(body.decode()) if body else None
            with self.lock:
                status, answer = self.route(method, path[len(PREFIX) :], payload, entry)
        except ApiError as error:
            status, answer = error.status, {"ErrorCode": error.code, "ErrorMessage": error.message}
        entry["status"] = status
        with self.lock:
            self.state["log"].append(entry)
        return status, answer

    def authenticate(self, method: str, path: str, lowered: Dict[str, str], body: bytes) -> None:
        """FC's checks: a known key, a signature over the path (no query), a matching Content-MD5."""
        key_id, _, signature = lowered.get("authorization", "")[len("FC ") :].partition(":")
        secret = self.credentials.get(key_id)
        if not lowered.get("authorization", "").startswith("FC ") or secret is None:
            raise ApiError(403, "InvalidAccessKeyId")
        if "date" not in lowered:
            raise ApiError(400, "MissingRequiredHeader", "date")
        if not hmac.compare_digest(signature, fc_signature(secret, method, unquote(path), lowered)):
            raise ApiError(403, "SignatureNotMatch")
        if "content-md5" in lowered:
            digest = base64.b64encode(hashlib.md5(body).hexdigest().encode()).decode()
            if lowered["content-md5"] != digest:
                raise ApiError(400, "InvalidArgument", "Content-MD5 does not match the body")

    def route(self, method: str, path: str, payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        for kind, pattern in ROUTES:
            match = pattern.match(path)
            if match:
                return getattr(self, kind)(
                    method, {k: unquote(v) for k, v in match.groupdict().items() if v}, payload, entry
                )
        raise ApiError(404, "PathNotSupported", path)

    def known(self, kind: str, table: str, key: str) -> Dict[str, Any]:
        if key not in self.state[table]:
            raise ApiError(404, MISSING[kind], key)
        return self.state[table][key]

    def upsert(
        self, kind: str, table: str, key: str, method: str, fields: Dict[str, Any], exists_code: str
    ) -> Dict[str, Any]:
        """POST creates (409 when it exists), PUT updates (404 when it does not)."""
        current = self.state[table].get(key)
        if method == "POST" and current is not None:
            raise ApiError(409, exists_code, key)
        if method == "PUT" and current is None:
            raise ApiError(404, MISSING[kind], key)
        stamp = now()
        record = dict(current or {"createdTime": stamp}, **fields)
        record["lastModifiedTime"] = stamp
        self.state[table][key] = record
        return record

    def services(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        if method == "GET":
            return 200, {"services": list(self.state["services"].values())}
        entry["body"] = payload
        return 200, self.upsert("service", "services", payload["serviceName"], "POST", payload, "ServiceAlreadyExists")

    def service(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        name = names["service"]
        if method == "GET":
            return 200, self.known("service", "services", name)
        entry["body"] = payload
        return 200, self.upsert("service", "services", name, method, dict(payload, serviceName=name), "")

    def functions(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        self.known("service", "services", names["service"])
        if method == "GET":
            prefix = names["service"] + "/"
            return 200, {"functions": [f for key, f in self.state["functions"].items() if key.startswith(prefix)]}
        return self.save_function(method, names["service"], payload["functionName"], payload, entry)

    def function(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        self.known("service", "services", names["service"])
        key = names["service"] + "/" + names["function"]
        if method == "GET":
            return 200, self.known("function", "functions", key)
        return self.save_function(method, names["service"], names["function"], payload, entry)

    def save_function(
        self, method: str, service: str, name: str, payload: Dict[str, Any], entry: Dict[str, Any]
    ) -> Tuple[int, Any]:
        """Keep the uploaded zip as a file; the record holds its path and FC's size and checksum."""
        fields = {k: v for k, v in payload.items() if k != "code"}
        environment = fields.get("environmentVariables") or {}
        bad = [k for k, v in environment.items() if not isinstance(v, str)]
        if bad:
            raise ApiError(400, "InvalidArgument", "environment variable values must be strings: " + ", ".join(bad))
        if "code" in payload:
            archive = base64.b64decode(payload["code"]["zipFile"])
            path = os.path.join(self.state_dir, "{}.{}.{}.zip".format(service, name, len(self.state["log"])))
            with open(path, "wb") as out:
                out.write(archive)
            fields.update(codeSize=len(archive), codeChecksum=hashlib.sha256(archive).hexdigest(), zip=path)
            entry["code"] = path
        elif method == "POST":
            raise ApiError(400, "InvalidArgument", "code is required")
        entry["body"] = dict(fields)
        record = self.upsert(
            "function",
            "functions",
            service + "/" + name,
            method,
            dict(fields, functionName=name),
            "FunctionAlreadyExists",
        )
        return 200, {k: v for k, v in record.items() if k != "zip"}

    def triggers(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        key = self.function_key(names)
        if method == "GET":
            return 200, {"triggers": [t for k, t in self.state["triggers"].items() if k.startswith(key + "/")]}
        entry["body"] = payload
        return 200, self.upsert(
            "trigger", "triggers", key + "/" + payload["triggerName"], "POST", payload, "TriggerAlreadyExists"
        )

    def trigger(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        key = self.function_key(names) + "/" + names["trigger"]
        if method == "GET":
            return 200, self.known("trigger", "triggers", key)
        if method == "DELETE":
            self.known("trigger", "triggers", key)
            del self.state["triggers"][key]
            return 204, None
        entry["body"] = payload
        return 200, self.upsert("trigger", "triggers", key, method, dict(payload, triggerName=names["trigger"]), "")

    def async_config(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        key = self.function_key(names) + "@" + names.get("qualifier", "LATEST")
        if method == "GET":
            return 200, self.known("async_config", "async_configs", key)
        if method == "DELETE":
            self.known("async_config", "async_configs", key)
            del self.state["async_configs"][key]
            return 204, None
        if method != "PUT":
            raise ApiError(405, "MethodNotAllowed")
        for target in (payload.get("destinationConfig") or {}).values():
            self.check_destination(target["destination"])
        entry["body"] = payload
        fields = dict(
            payload, service=names["service"], function=names["function"], qualifier=names.get("qualifier", "LATEST")
        )
        record = dict(self.state["async_configs"].get(key) or {"createdTime": now()}, **fields)
        self.state["async_configs"][key] = dict(record, lastModifiedTime=now())
        return 200, record

    def check_destination(self, destination: str) -> None:
        """Stricter than confirmed of FC: the destination must be a function that exists already."""
        match = DESTINATION.match(destination)
        if not match or (match["region"], match["account"]) != (self.region, self.account_id):
            raise ApiError(400, "InvalidArgument", "destination is not an FC function of this account: " + destination)
        if match["service"] + "/" + match["function"] not in self.state["functions"]:
            raise ApiError(400, "InvalidArgument", "destination function does not exist: " + destination)

    def function_key(self, names: Dict[str, str]) -> str:
        self.known("service", "services", names["service"])
        key = names["service"] + "/" + names["function"]
        self.known("function", "functions", key)
        return key

    def domains(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        if method == "GET":
            return 200, {"customDomains": list(self.state["domains"].values())}
        return self.save_domain("POST", payload["domainName"], payload, entry)

    def domain(self, method: str, names: Dict[str, str], payload: Any, entry: Dict[str, Any]) -> Tuple[int, Any]:
        if method == "GET":
            return 200, self.known("domain", "domains", names["domain"])
        return self.save_domain(method, names["domain"], dict(payload, domainName=names["domain"]), entry)

    def save_domain(self, method: str, name: str, payload: Dict[str, Any], entry: Dict[str, Any]) -> Tuple[int, Any]:
        for route in (payload.get("routeConfig") or {}).get("routes", []):
            self.known("function", "functions", route["serviceName"] + "/" + route["functionName"])
        entry["body"] = payload
        return 200, self.upsert("domain", "domains", name, method, payload, "DomainNameAlreadyExists")

    # -- what a test reads ------------------------------------------------------------------

    @staticmethod
    def load(state_dir: str) -> Dict[str, Any]:
        with open(os.path.join(state_dir, "state.json"), encoding="utf-8") as source:
            return json.load(source)


def requests_of(state: Dict[str, Any], method: Optional[str] = None) -> List[Dict[str, Any]]:
    return [entry for entry in state["log"] if method is None or entry["method"] == method]
