"""Idempotency stores: claim an event key before its handler runs, mark it done after.

A key is *in flight* from the claim until the handler finishes (or the in-flight lease runs
out, should the instance die), then *done* for the retention period, remembering which request
completed it (its signature) so that an exact replay of that request can be told from a
redelivery. A failed handler releases its claim so the next delivery runs again. Two stores
share this interface: in memory (one instance) and Redis (every instance of the function).
"""

import itertools
import os
import threading
import time
from collections import OrderedDict

from .deadline import BudgetSpent

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Optional, Tuple
    from typing import OrderedDict as OrderedDictOf  # novermin (never run: collections' is generic from 3.9)

    Entries = OrderedDictOf[str, Tuple[str, float]]  # key -> (token or done_by, expiry)

CLAIMED = "claimed"
IN_FLIGHT = "in_flight"
DONE = "done"


class Claim:
    """``state``: CLAIMED (run the handler), IN_FLIGHT or DONE (someone else has or had it);
    ``token``: identifies a CLAIMED claim, so that only its holder can release it;
    ``done_by``: for DONE, the fingerprint the completing request left (may be empty).

    (Slots rather than a namedtuple, here and in the other small records of this package: building
    a namedtuple class costs about 0.4 M instructions of every cold start, measured.)
    """

    __slots__ = ("done_by", "state", "token")

    def __init__(self, state: str, token: str, done_by: str) -> None:
        self.state = state
        self.token = token
        self.done_by = done_by


class StoreUnavailable(Exception):
    """The store could not answer in time; the caller fails open or closed as configured."""


class StoreFull(Exception):
    """Every entry of the bounded memory store is a live in-flight claim: none may be dropped."""


class MemoryStore:
    """Bounded, thread-safe store with per-key expiry.

    When full, the least recently used *done* entry makes room; a live in-flight claim is never
    dropped (that would let a redelivery run beside the first run), so a store full of them
    refuses new claims with :class:`StoreFull`. Correct for a single instance only: FC runs
    several instances, each with its own memory.
    """

    def __init__(self, max_entries: int = 100000, clock: "Callable[[], float]" = time.monotonic) -> None:
        self._in_flight: Entries = OrderedDict()  # key -> (token, expiry)
        self._done: Entries = OrderedDict()  # key -> (done_by, expiry)
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self._in_flight) + len(self._done)

    @staticmethod
    def _live(entries: "Entries", key: str, now: float) -> "Optional[Tuple[str, float]]":
        entry = entries.get(key)
        if entry is not None and entry[1] <= now:
            del entries[key]
            return None
        return entry

    def _make_room(self, now: float) -> None:
        """Drop expired claims, then done entries from the least recently used, until one fits."""
        if len(self._in_flight) + len(self._done) < self._max_entries:
            return  # the common case, without the method calls below (measured: 3 calls a claim)
        if len(self) >= self._max_entries:  # leases differ, so every claim is looked at (only when full)
            for expired in [key for key, (_token, expiry) in self._in_flight.items() if expiry <= now]:
                del self._in_flight[expired]
        while len(self) >= self._max_entries and self._done:
            self._done.popitem(last=False)
        if len(self) >= self._max_entries:
            raise StoreFull(f"{len(self._in_flight)} events in flight")

    def claim(
        self, key: str, lease_s: float, token: "Optional[str]" = None, adopt: bool = False, deadline: "Any" = None
    ) -> Claim:
        """Claim ``key`` for ``lease_s`` seconds, held with ``token`` (else a fresh one).

        ``adopt``: take over a claim left with ``token`` (a handed-off event's), under a fresh
        token, so that a second adopter of the same claim finds it in flight.
        """
        now = self._clock()
        with self._lock:
            done = self._live(self._done, key, now)
            if done is not None:
                self._done.move_to_end(key)
                return Claim(DONE, "", done[0])
            held = self._live(self._in_flight, key, now)
            if held is not None and not (adopt and token and held[0] == token):
                return Claim(IN_FLIGHT, "", "")
            if held is None:
                self._make_room(now)
            new_token = str(next(self._tokens)) if adopt or not token else token
            self._in_flight.pop(key, None)
            self._in_flight[key] = (new_token, now + lease_s)
            return Claim(CLAIMED, new_token, "")

    def complete(self, key: str, retention_s: float, done_by: str = "", deadline: "Any" = None) -> None:
        with self._lock:
            self._in_flight.pop(key, None)
            self._done.pop(key, None)
            self._done[key] = (done_by, self._clock() + retention_s)
            if len(self) > self._max_entries:
                self._done.popitem(last=False)

    def release(self, key: str, token: str, deadline: "Any" = None) -> None:
        with self._lock:
            held = self._in_flight.get(key)
            if held is not None and held[0] == token:
                del self._in_flight[key]


_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_ADOPT_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 0
"""


class RedisStore:
    """Store shared by every instance: ``SET NX PX`` claims, compare-and-delete releases.

    Values are ``in_flight:<token>`` or ``done:<fingerprint>``. Every call is bounded by the
    client's socket timeouts and by the request's budget.
    """

    def __init__(self, client: "Any", prefix: str = "dingtalk-fc:") -> None:
        import redis  # only when Redis is configured

        self._client = client
        self._prefix = prefix
        self._errors = (redis.RedisError, OSError)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._adopt = client.register_script(_ADOPT_SCRIPT)

    @classmethod
    def from_url(cls, url: str, timeout_ms: int, prefix: str = "dingtalk-fc:") -> "RedisStore":
        import redis

        timeout_s = timeout_ms / 1000.0
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        return cls(client, prefix)

    def _call(self, deadline: "Any", operation: "Callable[..., Any]", *args: "Any", **kwargs: "Any") -> "Any":
        """One Redis command, bounded by the socket timeouts and by the request's ``deadline``
        (which also covers the name lookup of a reconnect)."""
        try:
            if deadline is None:
                return operation(*args, **kwargs)
            return deadline.call(operation, *args, **kwargs)
        except self._errors as error:
            raise StoreUnavailable(f"redis: {type(error).__name__}") from None
        except BudgetSpent:
            raise StoreUnavailable("redis: request budget spent") from None

    def claim(
        self, key: str, lease_s: float, token: "Optional[str]" = None, adopt: bool = False, deadline: "Any" = None
    ) -> Claim:
        name = self._name(key)
        lease_ms = max(1, int(lease_s * 1000))
        new_token = _random_token() if adopt or not token else token
        value = IN_FLIGHT + ":" + new_token
        if adopt and token:
            left = IN_FLIGHT + ":" + token  # the handed-off claim, swapped for this holder's
            if self._call(deadline, self._adopt, keys=[name], args=[left, value, lease_ms]):
                return Claim(CLAIMED, new_token, "")
        for _attempt in range(3):
            if self._call(deadline, self._client.set, name, value, nx=True, px=lease_ms):
                return Claim(CLAIMED, new_token, "")
            current = self._call(deadline, self._client.get, name)
            if current is not None:
                state, _, detail = current.decode("utf-8", "replace").partition(":")
                return Claim(DONE, "", detail) if state == DONE else Claim(IN_FLIGHT, "", "")
            # the key expired between SET and GET: try to claim it again
        return Claim(IN_FLIGHT, "", "")

    def complete(self, key: str, retention_s: float, done_by: str = "", deadline: "Any" = None) -> None:
        value = DONE + ":" + done_by
        self._call(deadline, self._client.set, self._name(key), value, px=max(1, int(retention_s * 1000)))

    def release(self, key: str, token: str, deadline: "Any" = None) -> None:
        self._call(deadline, self._release, keys=[self._name(key)], args=[IN_FLIGHT + ":" + token])

    def _name(self, key: str) -> bytes:
        """The Redis key; ``surrogatepass`` because an id may hold a lone surrogate (JSON's
        ``"\\ud83d"``), which redis-py's strict encoding would refuse on every delivery."""
        return (self._prefix + key).encode("utf-8", "surrogatepass")


def _random_token() -> str:
    return os.urandom(12).hex()
