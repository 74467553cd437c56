"""Your event handlers: the one file to edit.

Each handler receives an :class:`~dingtalk_fc.Event` (``event.type``, ``event.data``,
``event.corp_id``, ``event.key``) and may return a dict of extra fields for the event's log
record. The pipeline has already verified, decrypted and de-duplicated the event, and it writes
the record (event type, ids, outcome, latency) itself: a handler only does its own work.

Keep imports at the top of this file light (no ``typing``, no SDKs you only use in one
handler): everything imported here is paid for by every cold start, inside DingTalk's 1500 ms.

Raise to fail the delivery: DingTalk records a failed push and the event can be delivered
again. A handler that calls slow systems can be marked ``deferred=True``: it then runs on the
worker function through FC asynchronous invocation and DingTalk gets its reply at once.
"""

from dingtalk_fc import Event, Router

router = Router()


@router.on(
    "user_add_org",
    "user_modify_org",
    "user_leave_org",
    "user_active_org",
    "org_admin_add",
    "org_admin_remove",
    "org_dept_create",
    "org_dept_modify",
    "org_dept_remove",
    "org_remove",
    "org_change",
    "label_user_change",
    "label_conf_add",
    "label_conf_del",
    "label_conf_modify",
)
def address_book(event: Event) -> dict:
    """Hires, leavers, profile and department changes: sync your directory or IAM here."""
    return {"family": "address_book"}


@router.on("bpms_task_change", "bpms_instance_change")
def approval(event: Event) -> dict:
    """Approval tasks and instances (start, finish, terminate; agree, refuse)."""
    return {"family": "approval"}


@router.on(
    "chat_add_member",
    "chat_remove_member",
    "chat_quit",
    "chat_update_owner",
    "chat_update_title",
    "chat_disband",
)
def group_chat(event: Event) -> dict:
    """Group chat membership, ownership and title changes."""
    return {"family": "group_chat"}


@router.on(
    "check_in",
    "attendance_check_record",
    "attendance_schedule_change",
    "attendance_overtime_duration",
)
def attendance(event: Event) -> dict:
    """Check-ins, punch records, schedule changes and overtime."""
    return {"family": "attendance"}


@router.on("meetingroom_book", "meetingroom_room_info")
def meeting_room(event: Event) -> dict:
    """Meeting room bookings and room changes."""
    return {"family": "meeting_room"}


@router.on("hrm_user_record_change", "hrm_mdm_user_change")
def hr(event: Event) -> dict:
    """Smart HR (智能人事) records: ``actionType`` says what changed for ``staffId``."""
    return {"family": "hr"}


@router.on("suite_ticket", "tmp_auth_code", "change_auth")
def third_party_suite(event: Event) -> dict:
    """Events only third-party (ISV) apps receive (their URL checks are answered built in)."""
    return {"family": "suite"}


@router.catch_all
def unhandled(event: Event) -> dict:
    """Any EventType not registered above: acknowledged and logged with outcome ``unhandled``."""
    return {"family": "unknown"}
