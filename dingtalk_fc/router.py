"""Handlers registered on EventType by decorator, with a catch-all."""

from .events import URL_CHECKS, Event

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

    Handler = Callable[[Event], Optional[Mapping[str, Any]]]


class Route:
    """A registered handler; ``deferred`` None follows the global default (DINGTALK_DEFER_ALL)."""

    __slots__ = ("catch_all", "deferred", "handler")

    def __init__(self, handler: "Handler", deferred: "Optional[bool]", catch_all: bool) -> None:
        self.handler = handler
        self.deferred = deferred
        self.catch_all = catch_all


CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect (cold start)


def _check_plain(handler: "Any") -> None:
    """Refuse an ``async def`` at registration: calling one only makes a coroutine, and the event
    would be acknowledged with its body never run."""
    if getattr(getattr(handler, "__code__", None), "co_flags", 0) & CO_COROUTINE:
        name = getattr(handler, "__name__", "handler")
        raise ValueError(f"{name} is async: handlers are plain functions (defer slow ones: deferred=True)")


class Router:
    """Maps EventType to a handler.

    A handler takes the :class:`Event` and may return a mapping of extra fields for the
    event's log record. It runs once per event (see the README on idempotency); raising makes
    the delivery fail so DingTalk records it as failed and the event can be delivered again.
    """

    def __init__(self) -> None:
        self._routes: Dict[str, Route] = {}
        self._catch_all: Optional[Route] = None

    def on(self, *event_types: str, deferred: "Optional[bool]" = None) -> "Callable[[Handler], Handler]":
        """Register the decorated function for these event types.

        ``deferred=True`` runs it on the worker function through FC asynchronous invocation,
        so the callback replies before the handler finishes.
        """
        if not event_types:
            raise ValueError("name at least one EventType")
        answered_built_in = set(URL_CHECKS) & set(event_types)
        if answered_built_in:
            raise ValueError(", ".join(sorted(answered_built_in)) + ": answered by the function itself")

        def register(handler: "Handler") -> "Handler":
            _check_plain(handler)
            for event_type in event_types:
                if event_type in self._routes:
                    raise ValueError(f"{event_type} already has a handler")
                self._routes[event_type] = Route(handler, deferred, catch_all=False)
            return handler

        return register

    def catch_all(self, handler: "Handler") -> "Handler":
        """Register the handler for every EventType nobody else handles (outcome ``unhandled``)."""
        _check_plain(handler)
        self._catch_all = Route(handler, deferred=None, catch_all=True)  # DINGTALK_DEFER_ALL defers it too
        return handler

    @property
    def has_deferred_routes(self) -> bool:
        """Whether any handler was registered with ``deferred=True`` (it then needs a worker)."""
        return any(route.deferred for route in self._routes.values())

    def registered(self) -> "List[Tuple[Optional[str], Route]]":
        """Every handler by EventType, sorted, and the catch-all last (as None): what tools list."""
        routes: List[Tuple[Optional[str], Route]] = sorted(self._routes.items())
        return routes + ([(None, self._catch_all)] if self._catch_all else [])

    def route(self, event_type: str) -> "Optional[Route]":
        return self._routes.get(event_type, self._catch_all)
