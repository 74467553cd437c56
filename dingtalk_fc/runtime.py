"""One per process: the pipeline built once from the environment, shared by every adapter."""

import logging
import os
import threading
import time

from . import errors
from .config import ConfigError, Settings, load_settings
from .dedup import MemoryStore, RedisStore
from .errors import RequestRejected
from .pipeline import CallbackPipeline, CallbackRequest, CallbackResponse, Deferrer, refuse
from .records import RecordWriter
from .router import Router

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Mapping, Optional

logger = logging.getLogger("dingtalk_fc")

DEFAULT_MAX_BODY_BYTES = 64 * 1024


class Runtime:
    """Builds the pipeline on first use (or in FC's initializer) and remembers a config error.

    A misconfigured function answers every request with 500 and a log line naming the
    variable, rather than failing its initializer, which FC would retry on every invocation.
    """

    def __init__(
        self,
        router: Router,
        environ: "Optional[Mapping[str, str]]" = None,
        clock: "Callable[[], float]" = time.time,
        records: "Optional[RecordWriter]" = None,
    ) -> None:
        self._router = router
        self._given_deferrer = None  # type: Optional[Deferrer]
        self._environ = environ
        self._clock = clock
        self._records = records or RecordWriter()
        self._pipeline = None  # type: Optional[CallbackPipeline]
        self._error = None  # type: Optional[ConfigError]
        self._lock = threading.Lock()

    def use_deferrer(self, deferrer: "Deferrer") -> None:
        """Hand deferred events to ``deferrer`` instead of FC's asynchronous invocation: the
        developer kit's local server, test harness and CLI; call it before the first request."""
        self._given_deferrer = deferrer

    def start(self) -> None:
        """Read and validate the configuration and build the pipeline; safe to call again."""
        with self._lock:
            if self._pipeline is not None or self._error is not None:
                return
            try:
                environ = os.environ if self._environ is None else self._environ
                self._pipeline = self._build(load_settings(environ))
            except ConfigError as error:
                self._error = error
                logger.error("configuration error: %s", error)

    def _build(self, settings: Settings) -> CallbackPipeline:
        if settings.dedup_redis_url:
            try:
                store = RedisStore.from_url(settings.dedup_redis_url, settings.dedup_timeout_ms)
            except ValueError:  # what redis-py refuses that the configuration check let through
                raise ConfigError("DINGTALK_DEDUP_REDIS_URL", "is not a URL redis-py accepts") from None
        else:
            store = MemoryStore(settings.dedup_memory_entries)
        deferrer = self._deferrer(settings)
        if deferrer is None and (settings.defer_all or self._router.has_deferred_routes):
            raise ConfigError("DINGTALK_WORKER_FUNCTION", "is not set, but handlers are deferred")
        return CallbackPipeline(settings, self._router, store, deferrer, clock=self._clock, records=self._records)

    def _deferrer(self, settings: Settings) -> "Optional[Deferrer]":
        if self._given_deferrer is not None:
            return self._given_deferrer
        if settings.worker_function and settings.fc_version == "3.0":
            from .deferral_fc3 import Fc3AsyncDeferrer

            return Fc3AsyncDeferrer(settings.worker_function, settings.fc_endpoint, self._environ)
        if settings.worker_function:
            from .deferral import FcAsyncDeferrer

            return FcAsyncDeferrer(settings.worker_function, settings.worker_service, settings.fc_endpoint)
        return None

    @property
    def pipeline(self) -> CallbackPipeline:
        """The pipeline; raises :class:`ConfigError` when the environment is invalid."""
        if self._pipeline is None:
            self.start()
        if self._error is not None:
            raise self._error
        assert self._pipeline is not None
        return self._pipeline

    @property
    def environ(self) -> "Mapping[str, str]":
        """The environment the configuration is read from (recovery reads its own variables)."""
        return os.environ if self._environ is None else self._environ

    @property
    def records(self) -> RecordWriter:
        return self._records

    @property
    def max_body_bytes(self) -> int:
        if self._pipeline is None:
            self.start()
        pipeline = self._pipeline
        return pipeline.max_body_bytes if pipeline is not None else DEFAULT_MAX_BODY_BYTES

    def handle(self, request: CallbackRequest) -> CallbackResponse:
        try:
            pipeline = self.pipeline
        except ConfigError as error:
            return self.refuse(RequestRejected(errors.MISCONFIGURED, detail=str(error)), request.request_id)
        return pipeline.handle(request)

    def refuse(self, rejection: RequestRejected, request_id: str) -> CallbackResponse:
        """Refuse a request before it reaches the pipeline (body too large, misconfiguration)."""
        record = {"request_id": request_id}  # type: dict
        response = refuse(rejection, record)
        record["status"] = response.status
        self._records.write(record)
        return response

    def run_worker(self, payload: bytes, request_id: str, context: "Any" = None) -> "Any":
        return self.pipeline.run_job(payload, request_id, context)
