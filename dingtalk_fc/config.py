"""Configuration from environment variables, read and validated once per instance.

A wrong value fails here, at start-up, with a message naming the variable and never its value.
"""

import re
from collections import namedtuple

import dingtalk_crypto

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import List, Mapping, Optional, Tuple


class ConfigError(Exception):
    """The function's environment is missing a variable or holds an invalid one."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable


class Settings(
    namedtuple(
        "Settings",
        [
            "token",
            "aes_key",
            "app_key",
            "previous_keys",
            "timestamp_tolerance_s",
            "max_body_bytes",
            "dedup_redis_url",
            "dedup_ttl_s",
            "dedup_in_flight_s",
            "dedup_memory_entries",
            "dedup_fail_closed",
            "dedup_timeout_ms",
            "defer_all",
            "worker_function",
            "worker_service",
            "fc_endpoint",
            "request_budget_ms",
            "fc_version",
        ],
    )
):
    """Everything the function needs, validated; built by :func:`load_settings`.

    Each field is named after its variable (``DINGTALK_DEDUP_TTL_SECONDS`` is ``dedup_ttl_s``).
    Durations are whole seconds (``*_s``) or milliseconds (``*_ms``); ``previous_keys`` is a list
    of ``(token, aes_key)`` pairs still accepted during a key rotation; ``fc_version`` is None
    unless set (the entry point then tells: see :mod:`dingtalk_fc.runtime`).
    """

    __slots__ = ()


TOKEN_PATTERN = re.compile(r"[A-Za-z0-9]{3,32}\Z")


def _required(environ: "Mapping[str, str]", name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(name, "is not set")
    return value


def _token(environ: "Mapping[str, str]", name: str) -> str:
    value = _required(environ, name)
    if not TOKEN_PATTERN.match(value):
        raise ConfigError(name, "must be 3-32 letters or digits")
    return value


def _aes_key(environ: "Mapping[str, str]", name: str) -> str:
    value = _required(environ, name)
    try:
        dingtalk_crypto.decode_aes_key(value)
    except dingtalk_crypto.InvalidAesKeyError as error:
        raise ConfigError(name, "is invalid: " + error.message) from None
    return value


def _integer(environ: "Mapping[str, str]", name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, "must be a whole number") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}")
    return value


def _flag(environ: "Mapping[str, str]", name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(name, "must be 1 or 0")


def _optional(environ: "Mapping[str, str]", name: str) -> "Optional[str]":
    return environ.get(name, "").strip() or None


def _previous_keys(environ: "Mapping[str, str]") -> "List[Tuple[str, str]]":
    token_set = bool(environ.get("DINGTALK_PREVIOUS_TOKEN", "").strip())
    key_set = bool(environ.get("DINGTALK_PREVIOUS_AES_KEY", "").strip())
    if not token_set and not key_set:
        return []
    if not token_set:
        raise ConfigError("DINGTALK_PREVIOUS_TOKEN", "is not set but DINGTALK_PREVIOUS_AES_KEY is")
    if not key_set:
        raise ConfigError("DINGTALK_PREVIOUS_AES_KEY", "is not set but DINGTALK_PREVIOUS_TOKEN is")
    return [(_token(environ, "DINGTALK_PREVIOUS_TOKEN"), _aes_key(environ, "DINGTALK_PREVIOUS_AES_KEY"))]


REDIS_VARIABLE = "DINGTALK_DEDUP_REDIS_URL"
# Options a Redis URL may carry. Timeouts and retries are the function's own to set
# (DINGTALK_DEDUP_TIMEOUT_MS): redis-py lets a URL's options override them.
REDIS_URL_OPTIONS = {"db", "client_name", "max_connections", "ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname"}


def _redis_url(environ: "Mapping[str, str]") -> "Optional[str]":
    """The URL, checked as redis-py will read it, so a typo fails here and not on every request."""
    url = _optional(environ, REDIS_VARIABLE)
    if not url:
        return None
    from urllib.parse import parse_qsl, urlsplit  # only when Redis is configured

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(REDIS_VARIABLE, "must start with redis://, rediss:// or unix://")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(REDIS_VARIABLE, "has an invalid port") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(REDIS_VARIABLE, "has no host")
    if parts.scheme != "unix" and port == 0:
        raise ConfigError(REDIS_VARIABLE, "has an invalid port")
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ConfigError(REDIS_VARIABLE, "has a database that is not a number")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if "timeout" in name or name.startswith("retry") or name == "health_check_interval":
            raise ConfigError(REDIS_VARIABLE, f"must not set {name}: DINGTALK_DEDUP_TIMEOUT_MS bounds Redis calls")
        if name not in REDIS_URL_OPTIONS:
            raise ConfigError(REDIS_VARIABLE, f"has an unknown option {name}")
        if name in ("db", "max_connections") and not value.isdigit():
            raise ConfigError(REDIS_VARIABLE, f"has a {name} that is not a number")
    return url


def _fc_version(environ: "Mapping[str, str]") -> "Optional[str]":
    """Which FC API hands deferred events off, where the entry point cannot tell: an HTTP request
    says it (WSGI is FC 2.0, ``index.fc3_handler`` FC 3.0), and so does a Python 3.12 context,
    but an FC 3.0 event function on python3.9/3.10 (the recovery timer) looks like FC 2.0's."""
    value = environ.get("DINGTALK_FC_VERSION", "").strip()
    if value and value not in ("2.0", "3.0"):
        raise ConfigError("DINGTALK_FC_VERSION", "must be 2.0 or 3.0")
    return value or None


# Variables an earlier version read, and why they are gone: set, they are warned about at start.
RETIRED = {
    "DINGTALK_MAX_QUERY_BYTES": "is no longer read: DingTalk's query is about 150 bytes, and 4096 is fixed",
}


def retired_variables(environ: "Mapping[str, str]") -> "List[str]":
    """A warning for each retired variable ``environ`` still sets."""
    return [f"{name} {why}" for name, why in sorted(RETIRED.items()) if environ.get(name, "").strip()]


# DingTalk waits 1500 ms for the reply: the calls that leave the process get at most this, the
# budget and one store timeout after it together.
MAX_REQUEST_BUDGET_MS = 1400
# A deferral job is the event re-encrypted (about the size of DingTalk's body) plus an envelope;
# FC refuses asynchronous payloads over 128 KB, so a worker caps the accepted body below that.
MAX_DEFERRABLE_BODY_BYTES = 120 * 1024


def load_settings(environ: "Mapping[str, str]") -> Settings:
    """Validate the environment; raise :class:`ConfigError` naming the first bad variable."""
    settings = Settings(
        token=_token(environ, "DINGTALK_TOKEN"),
        aes_key=_aes_key(environ, "DINGTALK_AES_KEY"),
        app_key=_required(environ, "DINGTALK_APP_KEY"),
        previous_keys=_previous_keys(environ),
        timestamp_tolerance_s=_integer(environ, "DINGTALK_TIMESTAMP_TOLERANCE_SECONDS", 300),
        max_body_bytes=_integer(environ, "DINGTALK_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
        dedup_redis_url=_redis_url(environ),
        dedup_ttl_s=_integer(environ, "DINGTALK_DEDUP_TTL_SECONDS", 24 * 3600, minimum=1),
        dedup_in_flight_s=_integer(environ, "DINGTALK_DEDUP_IN_FLIGHT_SECONDS", 900, minimum=1),
        dedup_memory_entries=_integer(environ, "DINGTALK_DEDUP_MEMORY_ENTRIES", 100000, minimum=1),
        dedup_fail_closed=_flag(environ, "DINGTALK_DEDUP_FAIL_CLOSED"),
        dedup_timeout_ms=_integer(environ, "DINGTALK_DEDUP_TIMEOUT_MS", 200, minimum=1),
        defer_all=_flag(environ, "DINGTALK_DEFER_ALL"),
        worker_function=_optional(environ, "DINGTALK_WORKER_FUNCTION"),
        worker_service=_optional(environ, "DINGTALK_WORKER_SERVICE"),
        fc_endpoint=_optional(environ, "DINGTALK_FC_ENDPOINT"),
        request_budget_ms=_integer(environ, "DINGTALK_REQUEST_BUDGET_MS", 1000, minimum=50),
        fc_version=_fc_version(environ),
    )
    _check_relations(settings)
    return settings


def _check_relations(settings: Settings) -> None:
    """Values that are each valid but together would break "exactly once"."""
    tolerance = settings.timestamp_tolerance_s
    if settings.request_budget_ms + settings.dedup_timeout_ms > MAX_REQUEST_BUDGET_MS:
        # marking a handled event done gets one store timeout even when the budget is spent
        raise ConfigError(
            "DINGTALK_REQUEST_BUDGET_MS",
            f"plus DINGTALK_DEDUP_TIMEOUT_MS must be at most {MAX_REQUEST_BUDGET_MS}: DingTalk waits 1500",
        )
    if settings.dedup_ttl_s < tolerance:
        # a done event forgotten while its request is still fresh could be replayed and run again
        raise ConfigError("DINGTALK_DEDUP_TTL_SECONDS", "must be at least DINGTALK_TIMESTAMP_TOLERANCE_SECONDS")
    if tolerance and settings.dedup_in_flight_s <= tolerance:
        # a claim whose completion could not be stored must outlive every replay of its request
        raise ConfigError("DINGTALK_DEDUP_IN_FLIGHT_SECONDS", "must exceed DINGTALK_TIMESTAMP_TOLERANCE_SECONDS")
    if settings.worker_function and settings.max_body_bytes > MAX_DEFERRABLE_BODY_BYTES:
        raise ConfigError(
            "DINGTALK_MAX_BODY_BYTES",
            f"must be at most {MAX_DEFERRABLE_BODY_BYTES} with a worker (FC's asynchronous payload limit)",
        )


# The least budget that pulls a page: the first page's reserve and one API call (5 s by default).
# Less would never pull one, run after run, so it is refused when the run starts.
MIN_BUDGET_S = 10


class RecoverySettings:
    """What a recovery run needs beyond the callback's settings; see :func:`load_recovery_settings`.
    Slots, not a namedtuple: this module is on the callback's cold start (see
    :class:`dingtalk_fc.errors.Problem`)."""

    __slots__ = (
        "api_base",
        "api_timeout_s",
        "app_key",
        "app_secret",
        "budget_s",
        "generation",
        "lookback_s",
        "max_pages",
        "oapi_base",
    )

    def __init__(
        self,
        *,
        app_key: str,
        app_secret: str,
        generation: str,
        api_base: str,
        oapi_base: str,
        api_timeout_s: float,
        budget_s: int,
        max_pages: int,
        lookback_s: int,
    ) -> None:
        self.app_key = app_key
        self.app_secret = app_secret
        self.generation = generation
        self.api_base = api_base
        self.oapi_base = oapi_base
        self.api_timeout_s = api_timeout_s
        self.budget_s = budget_s
        self.max_pages = max_pages
        self.lookback_s = lookback_s


def load_recovery_settings(environ: "Mapping[str, str]") -> RecoverySettings:
    """Validated when a recovery runs (the callback never needs the app secret), by the same
    rules as :func:`load_settings`."""
    # legacy by default: DingTalk documents get_call_back_failed_result as the failed list of
    # event subscriptions; v1 failedResults appears only in the generated SDKs
    from . import dingtalk_api  # recovery only: its urllib is kept off the callback's cold start

    generation = (_optional(environ, "DINGTALK_RECOVERY_API") or dingtalk_api.LEGACY).lower()
    if generation not in dingtalk_api.GENERATIONS:
        raise ConfigError("DINGTALK_RECOVERY_API", "must be " + " or ".join(dingtalk_api.GENERATIONS))
    bases = {}
    for name, default in (
        ("DINGTALK_API_BASE", dingtalk_api.DEFAULT_API_BASE),
        ("DINGTALK_OAPI_BASE", dingtalk_api.DEFAULT_OAPI_BASE),
    ):
        bases[name] = _optional(environ, name) or default
        if not bases[name].startswith(("https://", "http://")):
            raise ConfigError(name, "must start with https:// or http://")
    return RecoverySettings(
        app_key=_optional(environ, "DINGTALK_RECOVERY_APP_KEY") or _required(environ, "DINGTALK_APP_KEY"),
        app_secret=_required(environ, "DINGTALK_APP_SECRET"),
        generation=generation,
        api_base=bases["DINGTALK_API_BASE"],
        oapi_base=bases["DINGTALK_OAPI_BASE"],
        api_timeout_s=_integer(environ, "DINGTALK_API_TIMEOUT_MS", 5000, minimum=100) / 1000,
        budget_s=_integer(environ, "DINGTALK_RECOVERY_BUDGET_SECONDS", 240, minimum=MIN_BUDGET_S),
        max_pages=_integer(environ, "DINGTALK_RECOVERY_MAX_PAGES", 50, minimum=1),
        # a v1 list that keeps what it returns is paged by time over what de-duplication still
        # remembers: an item seen again later finds its record and cannot run twice
        lookback_s=max(60, _integer(environ, "DINGTALK_DEDUP_TTL_SECONDS", 24 * 3600, minimum=1) - 60),
    )
