"""Items of DingTalk's failed-push lists turned into the :class:`Event` a push would have given.

Every item shape the sources show (../shared/reference/dingtalk-payloads.md §12) is accepted:

* legacy ``get_call_back_failed_result`` (the documented list): ``{"call_back_tag", "event_time",
  <tag>: {...}}`` where the object under the tag holds the event's fields flattened, in the list's
  own lowercase spelling (``{"userid": [...], "corpid": "ding..."}``), or a wrapper
  (``bpmsCallBackData``, ``roleLabelChange``, ``callbackData``; an object or a JSON string) with
  ``corpid`` beside it;
* the 2018 shape of that list: the fields at the item's top level, beside the tag;
* v1 ``failedResults``: ``{"callBackTag", "callBackData": "<JSON string>", "corpId", "eventTime"}``;
* ISV ``failrecord/list``: ``{"call_back_tag", "call_back_data": "<JSON string>", "corpid", "id"}``.

The data is then spelled as the push spells it: the wrapper's content at the top level, its
siblings beside it, the list's ``corpid`` as ``CorpId`` and its ``userid`` list as ``userId``,
so handlers, helpers and log identifiers see what the push would have shown them.

The EventType is the tag. The idempotency key follows the push's rule (``eventId``, else
``BizId``, else a SHA-256); for an item without either, the digest is taken over a canonical
serialization of the data (sorted keys), so the same item always gets the same key, whichever
API generation returned it — but not the key its push had, whose digest covered DingTalk's own
bytes.
"""

import re

from . import errors
from .errors import RequestRejected
from .events import URL_CHECKS, Event
from .wire import parse_json_object, shape_of

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, Optional

TAG_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
_TAG_FIELDS = ("callBackTag", "call_back_tag", "EventType")
_DATA_FIELDS = ("callBackData", "call_back_data", "data")  # ``data``: the old SDK's ``Failed.data``
# Wrappers seen inside a legacy item's tag key, holding the fields as an object or a JSON string.
_WRAPPERS = ("callBackData", "callbackData", "call_back_data", "bpmsCallBackData", "roleLabelChange")
_CORP_FIELDS = ("corpId", "corpid", "CorpId")
_TIME_FIELDS = ("eventTime", "event_time")
# An item's own bookkeeping, never event fields (in the 2018 shape the fields sit beside them).
_ITEM_FIELDS = frozenset(_TAG_FIELDS + _TIME_FIELDS + ("id",))
# The failed list's lowercase spellings -> the push's, for fields at the data's top level.
_PUSH_SPELLINGS = (("corpid", "CorpId", ("CorpId", "corpId")), ("userid", "userId", ("userId", "UserId")))
UNKNOWN_TAG = errors.MISSING_EVENT_TYPE


def _tag(item: "Dict[str, Any]") -> str:
    for field in _TAG_FIELDS:
        tag = item.get(field)
        if tag is not None:
            break
    if not isinstance(tag, str) or not TAG_PATTERN.match(tag) or tag in URL_CHECKS:
        raise RequestRejected(UNKNOWN_TAG, detail="tag " + shape_of(tag))
    return tag


def _decode(raw: "Any", max_bytes: int) -> "Dict[str, Any]":
    """The event fields from an object or a JSON string, within ``max_bytes``."""
    if isinstance(raw, str) and len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        raise RequestRejected(errors.BODY_TOO_LARGE, detail=f"data of {len(raw)} chars")
    return parse_json_object(raw, "data")


def _fields(item: "Dict[str, Any]", tag: str, max_bytes: int) -> "Dict[str, Any]":
    for field in _DATA_FIELDS:
        if field in item:
            return _unwrapped(_decode(item[field], max_bytes), max_bytes)
    if tag in item:
        return _unwrapped(_decode(item[tag], max_bytes), max_bytes)
    top_level = {key: value for key, value in item.items() if key not in _ITEM_FIELDS}
    if not [key for key in top_level if key not in _CORP_FIELDS]:
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="no data for the tag")
    return top_level  # the 2018 shape


def _unwrapped(inner: "Dict[str, Any]", max_bytes: int) -> "Dict[str, Any]":
    """The wrapper's fields at the top level, the wrapper's siblings (``corpid``) kept beside
    them (the wrapped fields win where both have one)."""
    for wrapper in _WRAPPERS:
        if wrapper in inner:
            fields = {key: value for key, value in inner.items() if key != wrapper}
            fields.update(_decode(inner[wrapper], max_bytes))
            return fields
    return inner


def _push_spelling(data: "Dict[str, Any]") -> None:
    """The list's ``corpid`` / ``userid`` renamed as the push spells them; dropped only where
    the push's spelling is present with the same value (nothing is lost)."""
    for listed, pushed, push_spellings in _PUSH_SPELLINGS:
        if listed not in data or (listed == "userid" and not isinstance(data[listed], list)):
            continue
        present = [spelling for spelling in push_spellings if spelling in data]
        if not present:
            data[pushed] = data.pop(listed)
        elif data[present[0]] == data[listed]:
            del data[listed]


def event_from_item(item: "Any", max_bytes: int) -> Event:
    """The :class:`Event` for one failed-list item; raises :class:`RequestRejected` (with the
    push's errcodes) for an item that is not one, never for a tag nobody handles."""
    if not isinstance(item, dict):
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="item is " + shape_of(item))
    tag = _tag(item)
    data = dict(_fields(item, tag, max_bytes))
    own_type = data.get("EventType")
    if own_type is not None and own_type != tag:
        raise RequestRejected(UNKNOWN_TAG, detail="tag and EventType differ")
    data["EventType"] = tag
    _push_spelling(data)
    corp_id = _first(item, _CORP_FIELDS)
    if corp_id is not None and "CorpId" not in data and "corpId" not in data:
        data["CorpId"] = corp_id
    event_time = _first(item, _TIME_FIELDS)
    if event_time is not None and "EventTime" not in data:
        data["EventTime"] = event_time
    event = Event.from_data(data)
    if len(event.plaintext) > max_bytes:  # ASCII: characters are bytes
        raise RequestRejected(errors.BODY_TOO_LARGE, detail=f"event of {len(event.plaintext)} bytes")
    return event


def _first(item: "Dict[str, Any]", fields: "Any") -> "Optional[Any]":
    for field in fields:
        value = item.get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
    return None
