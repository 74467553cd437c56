"""Sample plaintexts for every DingTalk event type, as data (``catalog.json``).

Each sample is transcribed from DingTalk's documentation (the page is kept with it, see
:func:`source`): ``current`` is today's event subscription, ``legacy`` the old callback's shape,
and named variants are further documented shapes of the type (approval ``start``/``terminate``/
``delete``, task ``cancel``/``redirect``, meeting-room ``eventSubType`` values, ...).
"""

import copy
import functools
import json
import os
from typing import Any, Dict, List, Optional

CATALOG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalog.json")
VARIANTS = ("current", "legacy")


@functools.lru_cache(maxsize=None)
def _events() -> Dict[str, Dict[str, Any]]:
    with open(CATALOG_PATH, encoding="utf-8") as source:
        return json.load(source)["events"]


def _entry(event_type: str) -> Dict[str, Any]:
    events = _events()
    if event_type not in events:
        raise KeyError(f"unknown event type {event_type!r}; known: {', '.join(events)}")
    return events[event_type]


def event_types() -> List[str]:
    return list(_events())


def variants(event_type: str) -> List[str]:
    """``current`` and ``legacy`` where the type has them, then its named variants."""
    entry = _entry(event_type)
    return [variant for variant in VARIANTS if variant in entry] + list(entry.get("variants", {}))


def sample(event_type: str, variant: Optional[str] = None, **overrides: Any) -> Dict[str, Any]:
    """A fresh copy of the sample plaintext for ``event_type``, with ``overrides`` applied.

    ``variant`` defaults to ``current``, or ``legacy`` for a type only the old callback pushes
    (third-party suite events). Raises KeyError naming the known types or variants.
    """
    entry = _entry(event_type)
    chosen = variant or ("current" if "current" in entry else "legacy")
    named = entry.get("variants", {})
    if chosen not in VARIANTS and chosen in named:
        plaintext = copy.deepcopy(named[chosen])
    elif chosen in VARIANTS and chosen in entry:
        plaintext = copy.deepcopy(entry[chosen])
    else:
        raise KeyError(f"{event_type} has no {chosen!r} sample; it has {', '.join(variants(event_type))}")
    plaintext.update(overrides)
    return plaintext


def source(event_type: str, variant: Optional[str] = None) -> str:
    """The documentation page (or captured payload) the sample was transcribed from."""
    entry = _entry(event_type)
    return entry["sources"][variant or ("current" if "current" in entry else "legacy")]


def family(event_type: str) -> str:
    return _entry(event_type)["family"]


def values(event_type: str) -> Dict[str, Dict[str, str]]:
    """Documented values of the type's fields: ``{field: {value: meaning}}``."""
    return copy.deepcopy(_entry(event_type).get("values", {}))


def notes(event_type: str) -> str:
    return _entry(event_type).get("notes", "")


def value_type(value: Any) -> Any:
    """A value's JSON type: ``string``, ``integer``, ``array of string``, ...; an object gives its
    fields' types, a list of objects a one-item list of them."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return {field: value_type(item) for field, item in value.items()}
    if not value:
        return "array"
    items = [value_type(item) for item in value]
    if all(isinstance(item, dict) for item in items):
        merged = {}  # type: Dict[str, Any]
        for item in items:
            merged.update(item)
        return [merged]
    return "array of " + "/".join(sorted({str(item) for item in items}))


def describe(event_type: str) -> List[str]:
    """What ``python -m dingtalk_fc_dev events TYPE`` prints: each sample's fields and types,
    the documented values, the notes and the source of each sample."""
    lines = [f"{event_type} ({family(event_type)})"]
    for variant in variants(event_type):
        lines.append(f"  {variant}: {source(event_type, variant)}")
        lines.extend(_fields(value_type(sample(event_type, variant)), "    "))
    documented = values(event_type)
    if documented:
        lines.append("  documented values:")
        for field, meanings in documented.items():
            for value, meaning in meanings.items():
                lines.append(f"    {field} = {value}: {meaning}")
    if notes(event_type):
        lines.append("  notes: " + notes(event_type))
    return lines


def _fields(shape: Dict[str, Any], indent: str) -> List[str]:
    lines = []
    for field, kind in shape.items():
        if isinstance(kind, dict):
            lines.append(f"{indent}{field}: object")
            lines.extend(_fields(kind, indent + "  "))
        elif isinstance(kind, list):
            lines.append(f"{indent}{field}: array of object")
            lines.extend(_fields(kind[0], indent + "  "))
        else:
            lines.append(f"{indent}{field}: {kind}")
    return lines
