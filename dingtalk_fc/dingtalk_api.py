"""DingTalk's open API, as far as recovery needs it: access tokens and the failed-push list.

Two generations, both over plain HTTP with ``urllib`` (nothing to install, runs on Python 3.6):

* ``v1`` (the default): ``POST {api}/v1.0/oauth2/accessToken`` and
  ``GET {api}/v1.0/event/callbacks/failedResults`` with the ``x-acs-dingtalk-access-token``
  header; errors are HTTP 4xx/5xx with ``{"code", "message", "requestid"}``;
* ``legacy``: ``GET {oapi}/gettoken`` and ``GET {oapi}/call_back/get_call_back_failed_result``
  with ``access_token`` in the query; errors are HTTP 200 with a non-zero ``errcode`` (sometimes
  88 with the real code in ``sub_code``).

Every call is bounded as a whole (not only each read) by the API timeout and the run's budget,
through :meth:`Deadline.call`. Redirects are refused: DingTalk's API never needs one, and
urllib would copy the token header (or query) to whatever host one names. The app secret and
the access token travel only in request bodies, headers and query strings, which are never
logged or put into an exception message.
"""

import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .deadline import BudgetSpent, Deadline

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Callable, Dict, List, Optional, Tuple

V1, LEGACY = "v1", "legacy"
GENERATIONS = (V1, LEGACY)
DEFAULT_API_BASE = "https://api.dingtalk.com"
DEFAULT_OAPI_BASE = "https://oapi.dingtalk.com"
TOKEN_HEADER = "x-acs-dingtalk-access-token"  # noqa: S105 (a header name)
# Ask again this long before DingTalk's stated expiry (7200 s), so that no call carries a token
# that expires on the way.
TOKEN_MARGIN_S = 300
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_CHARS = 200

# Legacy errcodes (or sub_codes of errcode 88).
_LEGACY_TOKEN_EXPIRED = {40014, 42001, 41001}  # invalid, expired, missing access_token
_LEGACY_THROTTLED = {88, 90002, 90006, 90018, 90019}  # 88 alone: "forbidden temporarily"
_LEGACY_UNAVAILABLE = {-1}  # "system busy"
# v1 codes: an invalid or expired token, and throttling (HTTP 403 "Forbidden.AccessDenied.Qps...").
_V1_TOKEN_EXPIRED = {"InvalidAuthentication", "invalidAccessToken", "accessTokenExpired"}
_V1_THROTTLE_MARKERS = ("qpslimit", "throttl", "flowcontrol", "ratelimit")


class ApiError(Exception):
    """DingTalk's API failed; ``kind`` says how the run should react."""

    kind = "refused"

    def __init__(self, message: str, status: "Optional[int]" = None, code: "Optional[str]" = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TokenExpired(ApiError):
    """The access token was refused as invalid or expired: ask for a new one, once."""

    kind = "token_expired"


class CredentialsRejected(ApiError):
    """DingTalk refused the app key and secret: no retry will help until the operator acts."""

    kind = "credentials_rejected"


class Throttled(ApiError):
    """DingTalk's rate limit: stop this run; the next one continues."""

    kind = "throttled"


class Unavailable(ApiError):
    """Network failure, timeout, 5xx or an answer that is not JSON: stop this run."""

    kind = "unavailable"


class RedirectRefused(ApiError):
    """DingTalk's API answered with a redirect, which is never followed (see the module's doc)."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        fp.close()
        raise RedirectRefused(f"HTTP {code}: redirect refused", code)


_opener = urllib.request.build_opener(_RefuseRedirects)


class FailedPage:
    """One answer of the failed list: the raw ``items`` (dicts) and whether ``more`` remain."""

    __slots__ = ("items", "more")

    def __init__(self, items: "List[Any]", more: bool) -> None:
        self.items = items
        self.more = more


def _clean(text: "Any", secrets: "Tuple[str, ...]") -> str:
    """A short message from DingTalk, with any secret it might echo blanked out before it is cut
    (cut first, a secret spanning the cut would leave its first characters)."""
    message = str(text) if text is not None else ""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message[:MAX_MESSAGE_CHARS]


class DingTalkApi:
    """Tokens and failed pages for one app; one instance per function instance.

    The token is cached until ``TOKEN_MARGIN_S`` before the expiry DingTalk states, and
    forgotten when DingTalk refuses it. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        generation: str = V1,
        api_base: str = DEFAULT_API_BASE,
        oapi_base: str = DEFAULT_OAPI_BASE,
        timeout_s: float = 5.0,
        clock: "Callable[[], float]" = time.monotonic,
    ) -> None:
        if generation not in GENERATIONS:
            raise ValueError("generation must be one of " + ", ".join(GENERATIONS))
        self.generation = generation
        self._app_key = app_key
        self._app_secret = app_secret
        self._api_base = api_base.rstrip("/")
        self._oapi_base = oapi_base.rstrip("/")
        self._timeout_s = timeout_s
        self._clock = clock
        self._token: Optional[str] = None
        self._token_expires = 0.0
        self._lock = threading.Lock()
        self.token_requests = 0  # how many times a token was asked for (tests and summaries)

    # -- tokens --------------------------------------------------------------------------------

    def token(self, timeout_s: "Optional[float]" = None) -> str:
        """The cached access token, or a new one when none is valid (within ``timeout_s``)."""
        return self._token_within(self._within(timeout_s))

    def _token_within(self, within: "Optional[Deadline]") -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._token_expires:
                return self._token
            token, expires_in = self._request_token(self._bound(within))
            self.token_requests += 1
            self._token = token
            self._token_expires = self._clock() + max(0, expires_in - TOKEN_MARGIN_S)
            return token

    def forget_token(self, token: str) -> None:
        """Drop ``token`` (refused by DingTalk), unless another call already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _request_token(self, timeout_s: float) -> "Tuple[str, int]":
        try:
            if self.generation == V1:
                body = json.dumps({"appKey": self._app_key, "appSecret": self._app_secret}).encode()
                answer = self._call("POST", self._api_base + "/v1.0/oauth2/accessToken", {}, body, timeout_s)
                token, expires_in = answer.get("accessToken"), answer.get("expireIn")
            else:
                query = urllib.parse.urlencode({"appkey": self._app_key, "appsecret": self._app_secret})
                answer = self._call("GET", self._oapi_base + "/gettoken?" + query, {}, None, timeout_s)
                token, expires_in = answer.get("access_token"), answer.get("expires_in")
        except TokenExpired as error:  # a refusal of the credentials themselves
            raise CredentialsRejected(str(error), error.status, error.code) from None
        except ApiError as error:
            if type(error) is ApiError:  # any other refusal of a token request: the key or secret
                raise CredentialsRejected(str(error), error.status, error.code) from None
            raise
        if not isinstance(token, str) or not token:
            raise Unavailable("token answer without a token")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool):
            expires_in = 7200
        return token, expires_in

    # -- the failed list -----------------------------------------------------------------------

    def failed_page(
        self, timeout_s: "Optional[float]" = None, window: "Optional[Tuple[int, int]]" = None
    ) -> FailedPage:
        """Pull one page of the failed list; a refused token is replaced and the call made
        again, once, all within ``timeout_s``. DingTalk may delete what it returns, so the
        caller keeps the page safe. ``window``: v1 only, ``(beginTime, endTime)`` in ms (the
        SDK's examples), for a list that does not delete what it returns."""
        within = self._within(timeout_s)
        token = self._token_within(within)
        try:
            return self._failed_page(token, self._bound(within), window)
        except TokenExpired:
            self.forget_token(token)
        token = self._token_within(within)
        return self._failed_page(token, self._bound(within), window)

    def _failed_page(self, token: str, timeout_s: float, window: "Optional[Tuple[int, int]]" = None) -> FailedPage:
        if self.generation == V1:
            url = self._api_base + "/v1.0/event/callbacks/failedResults"
            if window is not None:
                url += "?" + urllib.parse.urlencode({"beginTime": window[0], "endTime": window[1]})
            answer = self._call("GET", url, {TOKEN_HEADER: token}, None, timeout_s, token)
            items, more = answer.get("failedList"), answer.get("hasMore")
        else:
            url = (
                self._oapi_base
                + "/call_back/get_call_back_failed_result?"
                + urllib.parse.urlencode({"access_token": token})
            )
            answer = self._call("GET", url, {}, None, timeout_s, token)
            items, more = answer.get("failed_list"), answer.get("has_more")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise Unavailable("failed list is not a list")
        return FailedPage(items, more is True)

    # -- HTTP ----------------------------------------------------------------------------------

    @staticmethod
    def _within(timeout_s: "Optional[float]") -> "Optional[Deadline]":
        return None if timeout_s is None else Deadline(timeout_s)

    def _bound(self, within: "Optional[Deadline]") -> float:
        """One call's bound: the API timeout, cut to what is left of the caller's time."""
        return self._timeout_s if within is None else max(0.05, min(self._timeout_s, within.remaining()))

    def _call(
        self,
        method: str,
        url: str,
        headers: "Dict[str, str]",
        body: "Optional[bytes]",
        timeout_s: float,
        token: str = "",
    ) -> "Dict[str, Any]":
        """One request; the JSON object answered, or the matching :class:`ApiError`."""
        secrets = (self._app_secret, token)
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (configured https base)
        request.add_header("Accept", "application/json")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in headers.items():
            request.add_header(name, value)
        try:  # bounded as a whole: a trickling answer or a hanging name lookup outlasts any read timeout
            status, raw = Deadline(timeout_s).call(_fetch, request, timeout_s)
        except BudgetSpent:
            raise Unavailable(f"DingTalk did not answer within {timeout_s:.1f} s") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise Unavailable("DingTalk unreachable: " + type(reason).__name__) from None
        if 300 <= status < 400:
            raise RedirectRefused(f"HTTP {status}: redirect refused", status)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # not an answer of DingTalk's
            answer = None
        if not isinstance(answer, dict):
            if status >= 500 or status < 400:
                raise Unavailable(f"HTTP {status}, not a JSON object", status)
            raise _v1_error(status, {}, secrets)
        if status >= 400:
            raise _v1_error(status, answer, secrets)
        errcode = answer.get("errcode", 0)
        if errcode not in (0, "0", None):
            raise _legacy_error(answer, secrets)
        return answer


def _fetch(request: "urllib.request.Request", timeout_s: float) -> "Tuple[int, bytes]":
    """Status and body of one request, redirects refused (an error status is an answer too)."""
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            return response.status, response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as error:
        return error.code, _read_quietly(error)


def _read_quietly(error: "urllib.error.HTTPError") -> bytes:
    try:
        return error.read(MAX_RESPONSE_BYTES)
    except OSError:
        return b""
    finally:
        error.close()


def _v1_error(status: int, answer: "Dict[str, Any]", secrets: "Tuple[str, ...]") -> ApiError:
    code = _clean(answer.get("code") or "", secrets)[:64]  # logged too: a secret echoed there is blanked
    message = f"HTTP {status} {code}: {_clean(answer.get('message'), secrets)}"
    lowered = code.lower()
    if status == 429 or any(marker in lowered for marker in _V1_THROTTLE_MARKERS):
        return Throttled(message, status, code)
    if status >= 500:
        return Unavailable(message, status, code)
    if code in _V1_TOKEN_EXPIRED or status == 401:
        return TokenExpired(message, status, code)
    return ApiError(message, status, code)


def _legacy_error(answer: "Dict[str, Any]", secrets: "Tuple[str, ...]") -> ApiError:
    errcode = _as_int(answer.get("errcode"))
    sub_code = _as_int(answer.get("sub_code"))
    effective = sub_code if errcode == 88 and sub_code is not None else errcode
    detail = answer.get("sub_msg") or answer.get("errmsg")
    message = f"errcode {errcode}" + (f"/{sub_code}" if sub_code is not None else "")
    message += ": " + _clean(detail, secrets)
    code = str(effective)
    if effective in _LEGACY_TOKEN_EXPIRED:
        return TokenExpired(message, 200, code)
    if effective in _LEGACY_THROTTLED:
        return Throttled(message, 200, code)
    if effective in _LEGACY_UNAVAILABLE:
        return Unavailable(message, 200, code)
    return ApiError(message, 200, code)


def _as_int(value: "Any") -> "Optional[int]":
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
