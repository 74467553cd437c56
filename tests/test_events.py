"""The helpers and the log identifiers read every spelling DingTalk documents
(../shared/reference/dingtalk-payloads.md §10), through the pipeline's records."""

import pytest
from conftest import with_canary

from dingtalk_fc import Event, Router

# (plaintext fields, what event.user_ids gives, record fields expected), each spelling from a source.
SPELLINGS = [
    ({"EventType": "label_user_change", "userIdList": ["u1"], "action": "add"}, ["u1"], {"action_type": "add"}),
    ({"EventType": "label_user_change", "UserIdList": ["u2"]}, ["u2"], {"user_ids": ["u2"]}),
    (
        {"EventType": "user_add_org", "userid": ["u3"], "corpid": "dingc"},
        ["u3"],
        {"user_ids": ["u3"], "corp_id": "dingc"},
    ),
    ({"EventType": "chat_update_owner", "owner": "u4", "openConversationId": "cid1"}, ["u4"], {"owner_id": "u4"}),
    (
        {"EventType": "chat_update_owner", "Owner": "u5", "OpenConversationId": "cid2"},
        ["u5"],
        {"open_conversation_id": "cid2"},
    ),
    ({"EventType": "chat_quit", "operator": "u6", "chatId": "c1"}, [], {"operator_id": "u6", "chat_id": "c1"}),
    ({"EventType": "chat_quit", "Operator": "u7", "ChatId": "c2"}, [], {"operator_id": "u7", "chat_id": "c2"}),
    ({"EventType": "hrm_mdm_user_change", "changeType": 1, "staffId": "s1"}, ["s1"], {"action_type": 1}),
    (
        {"EventType": "meetingroom_book", "eventSubType": "bookCancel", "bookId": "b1"},
        [],
        {"change_type": "bookCancel"},
    ),
    ({"EventType": "check_in", "StaffId": "s2", "timeStamp": 1495542282000}, ["s2"], {"staff_id": "s2"}),
    (
        {
            "EventType": "attendance_overtime_duration",
            "dataList": [{"userid": "u8"}, {"userid": "u9"}, {"userid": "u8"}],
        },
        ["u8", "u9"],
        {},
    ),
    ({"EventType": "change_auth", "AuthCorpId": "dingauth"}, [], {"corp_id": "dingauth"}),
]


@pytest.mark.parametrize(
    ("fields", "user_ids", "logged"), SPELLINGS, ids=[s[0]["EventType"] + "-" + sorted(s[0])[1] for s in SPELLINGS]
)
def test_helpers_and_records_read_every_documented_spelling(make_harness, fields, user_ids, logged):
    seen = []
    router = Router()
    router.catch_all(lambda event: seen.append(event))
    harness = make_harness(router)
    plaintext = with_canary({**fields, "eventId": "e-" + fields["EventType"]})
    assert harness.sender.check_reply(*harness.send(plaintext)[::2]) == "success"
    (event,) = seen
    assert list(event.user_ids) == user_ids
    record = harness.last_record
    for field, value in logged.items():
        assert record[field] == value, field


def test_corp_id_and_dept_ids_in_each_spelling():
    for spelling in ("CorpId", "corpId", "corpid"):
        assert Event.from_data({"EventType": "x", spelling: "dingc"}).corp_id == "dingc"
    for spelling in ("deptId", "DeptId", "deptIds"):
        assert Event.from_data({"EventType": "org_dept_create", spelling: [7]}).dept_ids == [7]


def test_the_first_listed_spelling_wins_in_the_record():
    event = Event.from_data(
        {"EventType": "x", "userid": ["late"], "userId": ["first"], "action": "a", "actionType": "b"}
    )
    assert event.identifiers == {"user_ids": ["first"], "action_type": "b"}
    assert list(event.user_ids) == ["first"]
