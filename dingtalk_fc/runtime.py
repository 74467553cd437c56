"""One per process: the function's parts, built once from the environment and shared by every
adapter and entry point.

A misconfigured function answers every request with 500 and a log line naming the variable,
rather than failing its initializer, which FC would retry on every invocation. Building is an
explicit call (:meth:`Runtime.load`): no getter builds anything behind its caller's back.
"""

import logging
import os
import threading
import time

import dingtalk_crypto

from .callback import Callback
from .config import ConfigError, Settings, load_settings, retired_variables
from .context import FC2, FC3, platform_of
from .dedup import MemoryStore, RedisStore
from .defer import Deferral
from .dispatch import Dispatcher
from .jobs import JobSealer
from .once import Once
from .records import RecordWriter
from .wire import Wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Dict, Mapping, Optional

    from .defer import Deferrer
    from .router import Router

logger = logging.getLogger("dingtalk_fc")


class App:
    """The built function for one FC ``platform`` (2.0 or 3.0): the HTTP ``callback``, the
    ``dispatcher`` every other way in uses (recovery, re-drive), the ``jobs`` sealer (what
    recovery journals events with) and where ``records`` go. The worker is built by
    :meth:`Runtime.run_worker`, for the worker function only: the callback's cold start skips it."""

    __slots__ = ("callback", "dispatcher", "jobs", "once", "platform", "records", "settings")

    def __init__(
        self,
        settings: Settings,
        platform: str,
        callback: Callback,
        dispatcher: Dispatcher,
        once: Once,
        jobs: JobSealer,
        records: RecordWriter,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.callback = callback
        self.dispatcher = dispatcher
        self.once = once
        self.jobs = jobs
        self.records = records


class Runtime:
    """Builds the function's parts on first use (or in FC's initializer) and remembers a
    configuration error. ``clock`` (seconds since the epoch) is injectable for tests."""

    def __init__(
        self,
        router: "Router",
        environ: "Optional[Mapping[str, str]]" = None,
        clock: "Callable[[], float]" = time.time,
        records: "Optional[RecordWriter]" = None,
    ) -> None:
        self.router = router
        self.records = records or RecordWriter()
        self._environ = environ
        self._clock = clock
        self._deferrer: Optional[Deferrer] = None
        self._store: Any = None
        self._settings: Optional[Settings] = None
        self._shared: Any = None  # (once, jobs, wire), built with the settings
        self._apps: Dict[str, App] = {}  # by the platform resolved
        self._loaded: Dict[Optional[str], App] = {}  # by the platform an entry point asked for
        self._workers: Dict[str, Any] = {}  # by platform, built at the first job
        self._error: Optional[ConfigError] = None
        self._lock = threading.Lock()

    @property
    def environ(self) -> "Mapping[str, str]":
        """The environment the configuration is read from."""
        return os.environ if self._environ is None else self._environ

    def use_deferrer(self, deferrer: "Deferrer") -> None:
        """Hand deferred events to ``deferrer`` instead of FC's asynchronous invocation: the
        developer kit's local server, test harness and CLI; call it before the first request."""
        self._deferrer = deferrer

    def use_store(self, store: "Any") -> None:
        """De-duplicate in ``store`` instead of the configured one (tests: another instance's
        memory, a store that fails)."""
        self._store = store
        if self._shared is not None:
            self._shared[0].store = store

    def start(self) -> None:
        """FC's initializer: read and validate the configuration once; never raises (a
        configuration error is logged once, and every request answers it)."""
        try:
            self._load_settings()
        except ConfigError:
            return  # logged once by _load_settings

    def load(self, platform: "Optional[str]" = None) -> App:
        """The function built for ``platform`` (the FC the entry point knows it runs on: None
        where it cannot tell); raises :class:`ConfigError` naming the variable at fault."""
        app = self._loaded.get(platform)
        if app is not None:  # every request after the first: one lookup
            return app
        settings = self._load_settings()
        configured = settings.fc_version
        if platform and configured and platform != configured:
            entry = "index.fc3_handler" if platform == FC3 else "the WSGI handler (index.handler)"
            raise ConfigError(
                "DINGTALK_FC_VERSION",
                f"is {configured}, but {entry} runs on FC {platform}: unset it, or set it to {platform}",
            )
        resolved = platform or configured or FC2
        app = self._apps.get(resolved)
        if app is None:
            with self._lock:
                app = self._apps.get(resolved) or self._build(settings, resolved)
                self._apps[resolved] = app
        self._loaded[platform] = app
        return app

    def run_worker(
        self, payload: bytes, request_id: str, context: "Any" = None, max_age_s: "Optional[float]" = None
    ) -> str:
        """What ``index.worker`` does with a job: run it, return its outcome, or raise (FC then
        retries it, and dead-letters it after the last retry). ``max_age_s``: see
        :meth:`dingtalk_fc.worker.Worker.run` (a re-drive may accept an older job)."""
        app = self.load(platform_of(context))
        worker = self._workers.get(app.platform)
        if worker is None:
            from .worker import Worker  # the worker function's only: off the callback's cold start

            worker = self._workers[app.platform] = Worker(
                app.jobs, app.once, self.router, self.records, app.settings.request_budget_ms / 1000
            )
        return worker.run(payload, request_id, context, max_age_s).name

    def _load_settings(self) -> Settings:
        if self._settings is not None:
            return self._settings
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._settings is None:
                try:
                    settings = load_settings(self.environ)
                    self._shared = self._build_shared(settings)
                except ConfigError as error:
                    self._error = error
                    logger.error("configuration error: %s", error)
                    raise
                for warning in retired_variables(self.environ):
                    logger.warning("configuration: %s", warning)
                self._settings = settings
        return self._settings

    def _build_shared(self, settings: Settings) -> "Any":
        """What every platform's parts share: the store (one per process), the cipher per key
        pair, the job sealer, the exactly-once unit."""
        store = self._store
        if store is None and settings.dedup_redis_url:
            try:
                store = RedisStore.from_url(settings.dedup_redis_url, settings.dedup_timeout_ms)
            except ValueError:  # what redis-py refuses that the configuration check let through
                raise ConfigError("DINGTALK_DEDUP_REDIS_URL", "is not a URL redis-py accepts") from None
        if store is None:
            store = MemoryStore(settings.dedup_memory_entries)
        deferring = settings.defer_all or self.router.has_deferred_routes
        if deferring and self._deferrer is None and not settings.worker_function:
            raise ConfigError("DINGTALK_WORKER_FUNCTION", "is not set, but handlers are deferred")
        pairs = [(settings.token, settings.aes_key), *settings.previous_keys]
        ciphers = [
            dingtalk_crypto.DingTalkCrypto(token, key, settings.app_key, clock=self._clock) for token, key in pairs
        ]
        once = Once(
            store,
            settings.app_key + ":",
            settings.dedup_in_flight_s,
            settings.dedup_ttl_s,
            settings.dedup_fail_closed,
            settings.dedup_timeout_ms / 1000,
        )
        return once, JobSealer(ciphers, self._clock), Wire(ciphers, settings.timestamp_tolerance_s, self._clock)

    def _build(self, settings: Settings, platform: str) -> App:
        once, jobs, wire = self._shared
        budget_s = settings.request_budget_ms / 1000
        dispatcher = Dispatcher(
            self.router,
            once,
            Deferral(once, jobs, self._deferrer_for(settings, platform), budget_s),
            settings.defer_all,
        )
        callback = Callback(wire, dispatcher, self.records, budget_s)
        return App(settings, platform, callback, dispatcher, once, jobs, self.records)

    def _deferrer_for(self, settings: Settings, platform: str) -> "Optional[Deferrer]":
        if self._deferrer is not None:
            return self._deferrer
        if not settings.worker_function:
            return None
        if platform == FC3:
            from .defer_fc3 import Fc3Deferrer  # FC 3.0 only: off FC 2.0's cold start

            return Fc3Deferrer(settings.worker_function, settings.fc_endpoint, self._environ)
        from .defer_fc2 import Fc2Deferrer

        return Fc2Deferrer(settings.worker_function, settings.worker_service, settings.fc_endpoint)
