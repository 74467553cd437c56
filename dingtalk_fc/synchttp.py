"""Third-party (ISV) apps' SyncHTTP delivery: one envelope, several business events.

A SyncHTTP delivery's plaintext is ``{"EventType": "SYNC_HTTP_PUSH_HIGH" | "SYNC_HTTP_PUSH_MEDIUM",
"bizData": [item, ...]}``; each item is a row of DingTalk's ``open_sync_biz_data`` tables:
``{"biz_type", "biz_id", "biz_data": "<JSON>", "corp_id", "subscribe_id", "gmt_create",
"gmt_modified", "id", "open_cursor", "status"}``, its ``biz_data`` naming the event in
``syncAction`` (``suite_ticket``, ``org_suite_auth``, ``user_add_org``, ...). Sources:
https://open.dingtalk.com/document/development/configure-synchttp-push and the data formats of
https://open.dingtalk.com/document/development/deprecated-dingtalk-cloud-push-data-format.

The envelope is not a business event: each item becomes its own :class:`Event`, typed by its
``syncAction`` (else ``sync_biz_type_<biz_type>``, which reaches the catch-all), with the
``biz_data`` fields at the top of ``event.data``, ``CorpId`` from the item's ``corp_id`` and the
item's row fields under ``syncHttp``. Its idempotency key is a digest of that data, which holds
what identifies the row (``subscribe_id``, ``corp_id``, ``biz_type``, ``biz_id``: DingTalk's
unique index) and its state (``gmt_modified``, ``biz_data``), not the delivery's bookkeeping
(``id``, ``open_cursor``, ``status``): the same item delivered again is a duplicate, a later
suite ticket is not.
"""

import re

from . import errors
from .errors import RequestRejected
from .events import URL_CHECKS, Event
from .wire import parse_json_object

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, List, Union

ITEMS_FIELD = "bizData"
ITEM_FIELD = "syncHttp"  # where event.data keeps the item's row fields
# The row fields that identify an item's state; ``id``, ``open_cursor`` and ``status`` are left out.
ROW_FIELDS = ("biz_type", "biz_id", "corp_id", "subscribe_id", "gmt_create", "gmt_modified")
TYPE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")


def item_events(data: "Dict[str, Any]") -> "List[Union[Event, RequestRejected]]":
    """One entry per ``bizData`` item, in order: its :class:`Event`, or the
    :class:`RequestRejected` that item earned (returned, not raised, so one malformed item does
    not cost the others). Raises :class:`RequestRejected` for a malformed envelope."""
    items = data.get(ITEMS_FIELD)
    if not isinstance(items, list):
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="SyncHTTP bizData is not a list")
    results: List[Union[Event, RequestRejected]] = []
    for item in items:
        try:
            results.append(_item_event(item))
        except RequestRejected as rejection:
            results.append(rejection)
    return results


def _item_event(item: "Any") -> Event:
    if not isinstance(item, dict):
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail="SyncHTTP item is not an object")
    biz_data = parse_json_object(item.get("biz_data"), "SyncHTTP biz_data")
    event_type = _event_type(biz_data, item.get("biz_type"))
    fields = dict(biz_data)
    fields["EventType"] = event_type
    corp_id = item.get("corp_id")
    if isinstance(corp_id, str) and not any(spelling in fields for spelling in ("CorpId", "corpId")):
        fields["CorpId"] = corp_id
    fields[ITEM_FIELD] = {field: item[field] for field in ROW_FIELDS if field in item}
    try:
        return Event.from_data(fields, compact=True)
    except RecursionError:  # parsed at json's limit, too deep to write again
        raise RequestRejected(errors.JSON_TOO_DEEP) from None


def _event_type(biz_data: "Dict[str, Any]", biz_type: "Any") -> str:
    action = biz_data.get("syncAction")
    if isinstance(action, str) and TYPE_PATTERN.match(action) and action not in URL_CHECKS:
        return action
    if isinstance(biz_type, int) and not isinstance(biz_type, bool) and 0 <= biz_type < 10**6:
        return "sync_biz_type_" + str(biz_type)
    raise RequestRejected(errors.MISSING_EVENT_TYPE, detail="SyncHTTP item has neither syncAction nor biz_type")
