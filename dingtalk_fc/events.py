"""The decrypted event handed to handlers, its idempotency key and its loggable identifiers."""

import hashlib
import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, List, Mapping, Optional, Sequence

CHECK_URL = "check_url"
# Third-party (ISV) suites' URL checks, answered with the encrypted "success" like check_url: the
# current docs say so for check_create_suite_url (kb:0243, kb:0350) and DingTalk's ISV quick-start
# demo (opendingtalk/eapp-isv-quick-start-java, CallbackController) replies "success" to every
# event; only an older ISV demo encrypted the plaintext's ``Random`` instead.
SUITE_URL_CHECKS = ("check_create_suite_url", "check_update_suite_url")
URL_CHECKS = (CHECK_URL, *SUITE_URL_CHECKS)
# A third-party app's SyncHTTP delivery: an envelope of several events (see dingtalk_fc.synchttp).
SYNC_HTTP_TYPES = ("SYNC_HTTP_PUSH_HIGH", "SYNC_HTTP_PUSH_MEDIUM")

# Record field -> the spellings DingTalk has used for it across event families, eras and the
# failed lists (../shared/reference/dingtalk-payloads.md §10): capitalised legacy pushes, camelCase
# current ones, lowercase ``userid``/``corpid`` in failed-list items and overtime records.
IDENTIFIER_FIELDS = (
    ("user_ids", ("userId", "UserId", "userIdList", "UserIdList", "userid", "userIds", "UserIds")),
    ("staff_id", ("staffId", "StaffId")),
    ("operator_id", ("OptStaffId", "optStaffId", "operatorUserId", "operator", "Operator")),
    ("owner_id", ("owner", "Owner")),  # chat_update_owner: the new owner
    ("dept_ids", ("deptId", "DeptId", "deptIds")),
    ("process_instance_id", ("processInstanceId",)),
    ("process_code", ("processCode",)),
    ("task_id", ("taskId",)),
    ("chat_id", ("ChatId", "chatId")),
    ("open_conversation_id", ("openConversationId", "OpenConversationId")),
    ("label_ids", ("LabelIdList", "labelIdList")),
    ("room_id", ("roomId", "RoomId")),
    ("book_id", ("bookId",)),
    ("action_type", ("actionType", "action", "changeType")),
    ("change_type", ("type", "eventSubType")),
    ("result", ("result",)),
)
MAX_LISTED_IDS = 50


def event_key(data: "Mapping[str, Any]", plaintext: str) -> str:
    """The idempotency key: ``eventId``, else ``BizId``, else a SHA-256 of the plaintext."""
    for field in ("eventId", "BizId"):
        value = data.get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return "sha256:" + hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


MAX_TEXT_CHARS = 128


def bounded_text(value: "Any") -> "Any":
    """A string cut to :data:`MAX_TEXT_CHARS` (ids and types come from outside: a 40 KB
    ``eventId`` must not make a 40 KB log record); anything else as it is."""
    return value[:MAX_TEXT_CHARS] if isinstance(value, str) else value


def _loggable(value: "Any") -> "Any":
    if isinstance(value, (list, tuple)):
        return [bounded_text(item) for item in value[:MAX_LISTED_IDS] if isinstance(item, (str, int))]
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return bounded_text(value)
    return None


# spelling -> (record field, rank among that field's spellings)
_SPELLINGS = {
    spelling: (record_field, rank)
    for record_field, spellings in IDENTIFIER_FIELDS
    for rank, spelling in enumerate(spellings)
}
_SPELLING_SET = frozenset(_SPELLINGS)
# Logged as lists whichever shape the event gives (SyncHTTP's ``userid`` is one string).
_LIST_FIELDS = frozenset(("user_ids", "dept_ids", "label_ids"))


def extract_identifiers(data: "Mapping[str, Any]") -> "Dict[str, Any]":
    """The identifiers worth a log line (ids, codes, result), never free text such as titles.

    Where an event carries several spellings of one field, the first listed in
    ``IDENTIFIER_FIELDS`` wins. Only the keys that are spellings are visited (a set
    intersection, in C): most of an event's keys are not.
    """
    found: Dict[str, Any] = {}  # field -> (rank, value)
    for spelling in _SPELLING_SET.intersection(data):
        raw = data[spelling]
        kind = type(raw)
        if kind is str:  # the common case first: most identifiers are short strings
            if not raw:
                continue
            value: Any = raw if len(raw) <= MAX_TEXT_CHARS else raw[:MAX_TEXT_CHARS]
        else:
            value = _loggable(raw)
            if value is None or value == []:
                continue
        field, rank = _SPELLINGS[spelling]
        known = found.get(field)
        if known is None or known[0] > rank:
            found[field] = (rank, [value] if field in _LIST_FIELDS and kind is not list else value)
    return {field: ranked[1] for field, ranked in found.items()}


# Where a handler finds the users an event is about, in order: the ids of address-book, label and
# chat-member events in every spelling, the new chat owner, the staff member of check-ins,
# approvals and HR events.
USER_ID_FIELDS = ("userId", "UserId", "userIdList", "UserIdList", "userid", "userIds", "UserIds")
USER_FALLBACK_FIELDS = ("owner", "Owner", "staffId", "StaffId")
_USER_FIELDS = USER_ID_FIELDS + USER_FALLBACK_FIELDS
DEPT_ID_FIELDS = ("deptId", "DeptId", "deptIds")
CORP_ID_FIELDS = ("CorpId", "corpId", "corpid", "AuthCorpId")
# Attendance events carry their users inside a list of records.
RECORD_LIST_FIELDS = ("dataList", "DataList")


def _as_list(value: "Any") -> "List[Any]":
    return value if isinstance(value, list) else [value]


class Event:
    """One decrypted DingTalk event. ``data`` is the plaintext JSON object as DingTalk sent it."""

    __slots__ = ("_plaintext", "corp_id", "data", "key", "type")

    def __init__(self, data: "Dict[str, Any]", plaintext: str, key: "Optional[str]" = None) -> None:
        self.data = data
        self.type: str = data["EventType"]
        self.key = key or event_key(data, plaintext)
        corp_id = data.get("CorpId")
        if corp_id is None:
            corp_id = self.first(*CORP_ID_FIELDS[1:])
        self.corp_id: Optional[str] = corp_id if isinstance(corp_id, str) else None
        self._plaintext = plaintext

    @classmethod
    def from_data(cls, data: "Dict[str, Any]", compact: bool = False) -> "Event":
        """An event that did not arrive as plaintext (a recovered item, a re-drive, a test).

        Its plaintext is its data in one canonical form: sorted keys, so the same data always
        gets the same key where neither ``eventId`` nor ``BizId`` gives one; ASCII, so data
        holding a lone surrogate (a JSON escape a push may carry too) still seals as a job.
        ``compact``: UTF-8 where it can be (a Chinese character is 3 bytes, not the 6 of its
        ``\\u`` escape), for events cut out of a delivery whose size was bounded as UTF-8 (the
        items of a SyncHTTP batch): they must fit FC's asynchronous payload as their body did.
        Raises :class:`RecursionError` for data nested deeper than ``json`` writes.
        """
        if compact:
            text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            try:
                text.encode("utf-8")
                return cls(data, text)
            except UnicodeEncodeError:  # a lone surrogate: only the ASCII form seals
                pass
        return cls(data, json.dumps(data, ensure_ascii=True, sort_keys=True, separators=(",", ":")))

    def __repr__(self) -> str:  # the plaintext stays out of reprs, and so out of tracebacks
        return f"Event(type={self.type!r}, key={self.key!r})"

    def get(self, field: str, default: "Any" = None) -> "Any":
        return self.data.get(field, default)

    def first(self, *spellings: str, default: "Any" = None) -> "Any":
        """The value of the first spelling present, e.g. ``event.first("userId", "UserId")``."""
        for spelling in spellings:
            if spelling in self.data:
                return self.data[spelling]
        return default

    @property
    def plaintext(self) -> str:
        return self._plaintext

    @property
    def identifiers(self) -> "Dict[str, Any]":
        return extract_identifiers(self.data)

    @property
    def user_ids(self) -> "Sequence[Any]":
        """The users the event is about, whichever documented spelling carries them (see
        :data:`USER_ID_FIELDS`; then the new chat owner or the staff member; then the users of
        an attendance event's records); ``[]`` when it names none."""
        for field in _USER_FIELDS:
            value = self.data.get(field)
            if value is not None:
                return _as_list(value)
        records = self.first(*RECORD_LIST_FIELDS, default=None)
        if isinstance(records, list):
            ids: List[Any] = []
            for item in records:
                if isinstance(item, dict):
                    value = item.get("userId", item.get("userid"))
                    if value is not None and value not in ids:
                        ids.append(value)
            return ids
        return []

    @property
    def dept_ids(self) -> "Sequence[Any]":
        value = self.first(*DEPT_ID_FIELDS, default=[])
        return _as_list(value)
