"""Items of DingTalk's failed-push list turned into the :class:`Event` a push would have given.

Sources disagree on an item's shape, so every one seen is accepted:

* v1 ``failedResults``: ``{"callBackTag", "callBackData": "<JSON string>", "corpId", "eventTime"}``;
* legacy ``get_call_back_failed_result``: ``{"call_back_tag", "event_time", <tag>: ...}`` where the
  value under the tag is the event's fields, or a wrapper (``callbackData``, ``bpmsCallBackData``,
  ``roleLabelChange``, ...) holding them as an object or a JSON string;
* ISV ``failrecord/list``: ``{"call_back_tag", "call_back_data": "<JSON string>", "corpid", "id"}``.

The EventType is the tag. The idempotency key follows the push's rule (``eventId``, else
``BizId``, else a SHA-256); for an item without either, the digest is taken over a canonical
serialization of the data (sorted keys), so the same item always gets the same key, whichever
API generation returned it — but not the key its push had, whose digest covered DingTalk's own
bytes.
"""

import json
import re

from . import errors
from .errors import RequestRejected
from .events import URL_CHECKS, Event

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, Optional

TAG_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
_TAG_FIELDS = ("callBackTag", "call_back_tag", "EventType")
_DATA_FIELDS = ("callBackData", "call_back_data")
# Wrappers seen inside a legacy item's tag key, holding the fields as an object or a JSON string.
_WRAPPERS = ("callBackData", "callbackData", "call_back_data", "bpmsCallBackData", "roleLabelChange")
_CORP_FIELDS = ("corpId", "corpid", "CorpId")
_TIME_FIELDS = ("eventTime", "event_time")
UNKNOWN_TAG = errors.MISSING_EVENT_TYPE


def _tag(item: "Dict[str, Any]") -> str:
    for field in _TAG_FIELDS:
        tag = item.get(field)
        if tag is not None:
            break
    if not isinstance(tag, str) or not TAG_PATTERN.match(tag) or tag in URL_CHECKS:
        raise RequestRejected(UNKNOWN_TAG, detail="tag " + _shape(tag))
    return tag


def _shape(value: "Any") -> str:
    """What a value looks like, without its content (which may be personal data)."""
    if isinstance(value, str):
        return f"str of {len(value)} chars"
    return type(value).__name__


def _decode(raw: "Any", max_bytes: int) -> "Dict[str, Any]":
    """The event fields from an object or a JSON string, within ``max_bytes``."""
    if isinstance(raw, str):
        if len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
            raise RequestRejected(errors.BODY_TOO_LARGE, detail=f"data of {len(raw)} chars")
        try:
            raw = json.loads(raw)
        except RecursionError:
            raise RequestRejected(errors.JSON_TOO_DEEP) from None
        except ValueError:
            raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="data is not JSON") from None
    if not isinstance(raw, dict):
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="data is " + _shape(raw))
    return raw


def _fields(item: "Dict[str, Any]", tag: str, max_bytes: int) -> "Dict[str, Any]":
    for field in _DATA_FIELDS:
        if field in item:
            return _decode(item[field], max_bytes)
    if tag not in item:
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="no data for the tag")
    inner = _decode(item[tag], max_bytes)
    wrapped = [field for field in _WRAPPERS if field in inner]
    if len(inner) == 1 and wrapped:
        return _decode(inner[wrapped[0]], max_bytes)
    return inner


def event_from_item(item: "Any", max_bytes: int) -> Event:
    """The :class:`Event` for one failed-list item; raises :class:`RequestRejected` (with the
    push's errcodes) for an item that is not one, never for a tag nobody handles."""
    if not isinstance(item, dict):
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="item is " + _shape(item))
    tag = _tag(item)
    data = dict(_fields(item, tag, max_bytes))
    own_type = data.get("EventType")
    if own_type is not None and own_type != tag:
        raise RequestRejected(UNKNOWN_TAG, detail="tag and EventType differ")
    data["EventType"] = tag
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
