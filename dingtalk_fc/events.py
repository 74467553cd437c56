"""The decrypted event handed to handlers, its idempotency key and its loggable identifiers."""

import hashlib
import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Dict, Mapping, Optional, Sequence

CHECK_URL = "check_url"
# Third-party (ISV) suites' URL checks: the reply carries the plaintext's ``Random`` value
# instead of "success", as DingTalk's official ISV sample answers them.
SUITE_URL_CHECKS = ("check_create_suite_url", "check_update_suite_url")
URL_CHECKS = (CHECK_URL, *SUITE_URL_CHECKS)

# Record field -> the spellings DingTalk has used for it across event families and eras.
IDENTIFIER_FIELDS = (
    ("user_ids", ("userId", "UserId", "userIds", "UserIds")),
    ("staff_id", ("staffId", "StaffId")),
    ("operator_id", ("OptStaffId", "optStaffId", "operatorUserId")),
    ("dept_ids", ("deptId", "DeptId", "deptIds")),
    ("process_instance_id", ("processInstanceId",)),
    ("process_code", ("processCode",)),
    ("task_id", ("taskId",)),
    ("chat_id", ("ChatId", "chatId", "openConversationId")),
    ("label_ids", ("LabelIdList", "labelIdList")),
    ("room_id", ("roomId", "RoomId")),
    ("action_type", ("actionType",)),
    ("change_type", ("type",)),
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


def extract_identifiers(data: "Mapping[str, Any]") -> "Dict[str, Any]":
    """The identifiers worth a log line (ids, codes, result), never free text such as titles.

    Where an event carries several spellings of one field, the first listed in
    ``IDENTIFIER_FIELDS`` wins.
    """
    found = {}  # type: Dict[str, Tuple[int, Any]]
    for spelling, raw in data.items():
        known = _SPELLINGS.get(spelling)
        if known is None:
            continue
        value = _loggable(raw)
        if value not in (None, [], "") and (known[0] not in found or found[known[0]][0] > known[1]):
            found[known[0]] = (known[1], value)
    return {field: ranked[1] for field, ranked in found.items()}


class Event:
    """One decrypted DingTalk event. ``data`` is the plaintext JSON object as DingTalk sent it."""

    __slots__ = ("_plaintext", "corp_id", "data", "key", "type")

    def __init__(self, data: "Dict[str, Any]", plaintext: str, key: "Optional[str]" = None) -> None:
        self.data = data
        self.type = data["EventType"]  # type: str
        self.key = key or event_key(data, plaintext)
        corp_id = data.get("CorpId", data.get("corpId"))
        self.corp_id = corp_id if isinstance(corp_id, str) else None  # type: Optional[str]
        self._plaintext = plaintext

    @classmethod
    def from_data(cls, data: "Dict[str, Any]") -> "Event":
        """An event that did not arrive as plaintext (a recovered item, a re-drive, a test).

        Its plaintext is its data in one canonical form: sorted keys, so the same data always
        gets the same key where neither ``eventId`` nor ``BizId`` gives one; ASCII, so data
        holding a lone surrogate (a JSON escape a push may carry too) still seals as a job.
        """
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
    def user_ids(self) -> "Sequence[str]":
        ids = self.first("userId", "UserId", default=[])
        return ids if isinstance(ids, list) else [ids]

    @property
    def dept_ids(self) -> "Sequence[Any]":
        ids = self.first("deptId", "DeptId", default=[])
        return ids if isinstance(ids, list) else [ids]
