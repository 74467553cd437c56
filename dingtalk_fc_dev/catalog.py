"""Sample plaintexts for every DingTalk event type, as data (``catalog.json``)."""

import copy
import functools
import json
import os
from typing import Any, Dict, List

CATALOG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalog.json")
VARIANTS = ("current", "legacy")


@functools.lru_cache(maxsize=None)
def _events() -> Dict[str, Dict[str, Dict[str, Any]]]:
    with open(CATALOG_PATH, encoding="utf-8") as source:
        return json.load(source)["events"]


def event_types() -> List[str]:
    return list(_events())


def variants(event_type: str) -> List[str]:
    return [variant for variant in VARIANTS if variant in _events()[event_type]]


def sample(event_type: str, variant: str = "current", **overrides: Any) -> Dict[str, Any]:
    """A fresh copy of the sample plaintext for ``event_type``, with ``overrides`` applied.

    Raises KeyError naming the known types when ``event_type`` is not in the catalog.
    """
    events = _events()
    if event_type not in events:
        raise KeyError(f"unknown event type {event_type!r}; known: {', '.join(events)}")
    if variant not in events[event_type]:
        raise KeyError(f"{event_type} has no {variant!r} sample")
    plaintext = copy.deepcopy(events[event_type][variant])
    plaintext.update(overrides)
    return plaintext
