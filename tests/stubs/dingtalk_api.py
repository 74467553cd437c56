"""A local HTTP server that speaks DingTalk's token and failed-list APIs, both generations, for
the real client (``dingtalk_fc.dingtalk_api``) to talk to.

* ``api`` host (v1): ``POST /v1.0/oauth2/accessToken`` (JSON ``{"appKey", "appSecret"}`` ->
  ``{"accessToken", "expireIn"}``) and ``GET /v1.0/event/callbacks/failedResults`` (header
  ``x-acs-dingtalk-access-token``; -> ``{"failedList": [...], "hasMore"}``); errors as HTTP
  4xx/5xx with ``{"code", "message", "requestid"}``.
* ``oapi`` host (legacy): ``GET /gettoken?appkey=&appsecret=`` and
  ``GET /call_back/get_call_back_failed_result?access_token=``; errors as HTTP 200 with
  ``{"errcode", "errmsg"}``.

Both hosts are served on one port (the paths differ). By default the list is cleared on read,
as a community sample reports DingTalk's legacy list is: what a page returns is gone. With
``clear_on_read=False`` it never deletes what it returns (as v1 may not), and v1 honours
``beginTime``/``endTime`` (ms, ``[begin, end)`` on each item's ``eventTime``), ``hasMore`` meaning
more items inside that range, as the SDK's wording has it. Failures are injected
with ``throttle_next``, ``fail_next`` and ``delay_s``, and at the HTTP level with ``trickle_s``
(each answer sent a byte at a time, this far apart), ``garbage_next`` (a malformed status line)
and ``redirect_to`` (the failed list answered with a 302 there); ``expire_tokens()`` makes every
token issued so far invalid, as an expiry would.
"""

import contextlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qsl, urlsplit

from conftest import ACCESS_TOKEN_MARKER as TOKEN_MARKER  # in every token issued: the leak scan looks for it
from stubs.loopback import LoopbackServer

LEGACY_PAGE_SIZE = 200  # documented maximum per call of get_call_back_failed_result
V1_PAGE_SIZE = 100  # the SDK's model says at most 200; a smaller size exercises the paging


def v1_item(
    data: Dict[str, Any], tag: Optional[str] = None, corp_id: str = "dingcorp0001", event_time: int = 1700000000000
) -> Dict[str, Any]:
    """An item of failedResults as the SDK models it: the event's data as a JSON string under
    ``callBackData``, ``corpId`` and ``eventTime`` (ms) beside it."""
    return {
        "callBackTag": tag or data["EventType"],
        "callBackData": json.dumps({k: v for k, v in data.items() if k != "EventType"}, ensure_ascii=False),
        "corpId": corp_id,
        "eventTime": event_time,
    }


LEGACY_SHAPES = ("flat", "bpmsCallBackData", "roleLabelChange", "callbackData", "callbackData-string", "2018")
_LISTED_SPELLINGS = {"userId": "userid", "UserId": "userid", "CorpId": "corpid"}


def _listed(fields: Dict[str, Any]) -> Dict[str, Any]:
    """Fields as the legacy list spells them flattened: ``userid``, ``corpid`` (doc 0015 / kb:0235)."""
    return {_LISTED_SPELLINGS.get(key, key): value for key, value in fields.items()}


def legacy_item(data: Dict[str, Any], shape: str = "flat", tag: Optional[str] = None) -> Dict[str, Any]:
    """An item of get_call_back_failed_result exactly as the reference shows it
    (../shared/reference/dingtalk-payloads.md §12.1):

    * ``flat``: ``{<tag>: {"userid": [...], "corpid": "ding..."}}`` (the documented sample);
    * ``bpmsCallBackData`` / ``roleLabelChange`` / ``callbackData``: ``{<tag>: {<wrapper>: {...},
      "corpid": "ding..."}}``, the push's fields (with its ``EventType`` and ``corpId``, as the 2019
      and 2021 captures show) inside the wrapper, ``corpid`` beside it; ``callbackData-string``:
      the wrapper's content as a JSON string;
    * ``2018``: the flattened fields at the item's top level, beside the tag (a 2018 client's doc quote).
    """
    tag = tag or data["EventType"]
    item = {"call_back_tag": tag, "event_time": 1700000000000}  # type: Dict[str, Any]
    if shape == "flat":
        item[tag] = _listed({k: v for k, v in data.items() if k != "EventType"})
    elif shape == "2018":
        item.update(_listed({k: v for k, v in data.items() if k != "EventType"}))
    else:
        wrapper = shape.split("-")[0]
        inner = {k: v for k, v in data.items() if k != "CorpId"}
        corp_id = data.get("CorpId", data.get("corpId"))
        wrapped = json.dumps(inner, ensure_ascii=False) if shape.endswith("-string") else inner
        item[tag] = {wrapper: wrapped, "corpid": corp_id}
    return item


class DingTalkApiStub(LoopbackServer):
    def __init__(self, app_key: str, app_secret: str, expires_in: int = 7200, clear_on_read: bool = True) -> None:
        self.app_key = app_key
        self.app_secret = app_secret
        self.expires_in = expires_in
        self.clear_on_read = clear_on_read
        self.failed = []  # type: List[Dict[str, Any]]  # items waiting in the failed list
        self.pulled = []  # type: List[Dict[str, Any]]  # every item a page has returned
        self.tokens = set()  # type: set
        self.requests = []  # type: List[Dict[str, Any]]
        self.throttle_next = 0
        self.fail_next = 0
        self.delay_s = 0.0
        self.trickle_s = 0.0
        self.garbage_next = 0
        self.redirect_to = ""
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = stub.handle(self.command, self.path, dict(self.headers.items()), body)
                if stub.take("garbage_next"):
                    self.wfile.write(b"HTTP/1.1 OK-ish\r\n\r\n")  # not a status line
                    return
                payload = json.dumps(answer, ensure_ascii=False).encode()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", answer["location"])
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-acs-request-id", str(uuid.uuid4()).upper())
                self.end_headers()
                chunk = 1 if stub.trickle_s else len(payload)
                with contextlib.suppress(ConnectionError):  # the client gave up waiting
                    for start in range(0, len(payload), chunk):
                        self.wfile.write(payload[start : start + chunk])
                        time.sleep(stub.trickle_s)

            do_GET = do_POST = _answer

        self.serve(Handler)
        self.base = self.endpoint

    def add(self, *items: Dict[str, Any]) -> None:
        with self.lock:
            self.failed.extend(items)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def take(self, counter: str) -> bool:
        """Use up one of an injected failure's ``counter``; whether there was one."""
        with self.lock:
            left = getattr(self, counter)
            setattr(self, counter, max(0, left - 1))
        return left > 0

    def calls(self, path: str) -> List[Dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Dict[str, str], body: bytes) -> tuple:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        lowered = {name.lower(): value for name, value in headers.items()}
        with self.lock:
            self.requests.append({"method": method, "path": parts.path, "query": query, "headers": lowered})
        if self.delay_s:
            time.sleep(self.delay_s)
        legacy = not parts.path.startswith("/v1.0/")
        with self.lock:
            if self.throttle_next:
                self.throttle_next -= 1
                if legacy:
                    return 200, {"errcode": 90018, "errmsg": "当前企业调用该接口的QPS超过限制"}
                return 403, self._v1_error("Forbidden.AccessDenied.QpsLimitForApi", "调用该接口触发了限流")
            if self.fail_next:
                self.fail_next -= 1
                if legacy:
                    return 502, {}  # a gateway error, not even JSON from DingTalk
                return 500, self._v1_error("ServiceUnavailable", "服务暂不可用")
        route = (method, parts.path)
        if self.redirect_to and parts.path.endswith(("/failedResults", "/get_call_back_failed_result")):
            return 302, {"location": self.redirect_to}
        if route == ("POST", "/v1.0/oauth2/accessToken"):
            return self._v1_token(lowered, body)
        if route == ("GET", "/v1.0/event/callbacks/failedResults"):
            if lowered.get("x-acs-dingtalk-access-token") not in self.tokens:
                return 400, self._v1_error("InvalidAuthentication", "不合法的access_token")
            window = (_ms(query.get("beginTime")), _ms(query.get("endTime")))
            items, more = self._page(V1_PAGE_SIZE, window)
            return 200, {"failedList": items, "hasMore": more}
        if route == ("GET", "/gettoken"):
            if query.get("appkey") != self.app_key or query.get("appsecret") != self.app_secret:
                return 200, {"errcode": 40089, "errmsg": "不合法的corpid或corpsecret"}
            return 200, {"errcode": 0, "errmsg": "ok", "access_token": self._issue(), "expires_in": self.expires_in}
        if route == ("GET", "/call_back/get_call_back_failed_result"):
            token = query.get("access_token")
            if not token:
                return 200, {"errcode": 41001, "errmsg": "缺少access_token参数"}
            if token not in self.tokens:
                return 200, {"errcode": 42001, "errmsg": "access_token超时"}
            items, more = self._page(LEGACY_PAGE_SIZE)
            return 200, {"errcode": 0, "errmsg": "ok", "has_more": more, "failed_list": items}
        if legacy:
            return 404, {"errcode": 404, "errmsg": "not found"}
        return 404, self._v1_error("NotFound", "api not found")

    @staticmethod
    def _v1_error(code: str, message: str) -> Dict[str, str]:
        return {"code": code, "message": message, "requestid": str(uuid.uuid4()).upper()}

    def _v1_token(self, headers: Dict[str, str], body: bytes) -> tuple:
        if not headers.get("content-type", "").startswith("application/json"):
            return 400, self._v1_error("MissingBody", "body is mandatory for this action.")
        try:
            request = json.loads(body)
        except ValueError:
            return 400, self._v1_error("InvalidParameter", "body is not JSON")
        if request.get("appKey") != self.app_key:
            return 400, self._v1_error("invalidClientId", "无效的clientId")
        if request.get("appSecret") != self.app_secret:
            return 400, self._v1_error("invalidClientSecret", "无效的clientSecret")
        return 200, {"accessToken": self._issue(), "expireIn": self.expires_in}

    def _issue(self) -> str:
        token = TOKEN_MARKER + uuid.uuid4().hex
        with self.lock:
            self.tokens.add(token)
        return token

    def _page(self, size: int, window: tuple = (None, None)) -> tuple:
        begin, end = window
        with self.lock:
            listed = [item for item in self.failed if _in_window(item, begin, end)]
            items = listed[:size]
            if self.clear_on_read:
                taken = {id(item) for item in items}
                self.failed = [item for item in self.failed if id(item) not in taken]
            self.pulled.extend(items)
            more = len(listed) > size
        return items, more


def _ms(value: Optional[str]) -> Optional[int]:
    return None if value is None else int(value)


def _in_window(item: Dict[str, Any], begin: Optional[int], end: Optional[int]) -> bool:
    at = item.get("eventTime", item.get("event_time", 0)) if isinstance(item, dict) else 0
    at = at if isinstance(at, int) else 0
    return (begin is None or at >= begin) and (end is None or at < end)
