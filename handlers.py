"""Your event handlers: the one file to edit.

Each handler receives an :class:`~dingtalk_fc.Event` (``event.type``, ``event.data``,
``event.corp_id``, ``event.key``) and may return a dict of extra fields for the event's log
record. The function has already verified, decrypted and de-duplicated the event, and it writes
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
    """Hires, leavers, profile and department changes: sync your directory or IAM here.
    ``event.user_ids`` and ``event.dept_ids`` read every spelling (``userId``, ``UserId``,
    ``userIdList``, recovered ``userid``); ``user_modify_org`` carries ``diffInfo`` (prev/curr)."""
    return {"family": "address_book"}


@router.on("bpms_task_change", "bpms_instance_change", "workflow_form_change")
def approval(event: Event) -> dict:
    """Approvals. ``bpms_instance_change``: ``type`` start, finish, terminate or delete, and
    ``result`` agree or refuse only when ``type`` is finish. ``bpms_task_change``: ``type`` start,
    finish or cancel (or-sign: another approver acted first), ``result`` agree, refuse or redirect
    (handed to another approver: not an approval). ``workflow_form_change``: a template changed.
    Legacy pushes carry only ``corpId``. Fields: ``python -m dingtalk_fc_dev events bpms_task_change``."""
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
    """Group chats: members in ``userId`` (add/remove only), the new ``owner``, the new ``title``,
    the ``operator``; ``openConversationId`` is the id the current IM APIs take."""
    return {"family": "group_chat"}


@router.on(
    "check_in",
    "attendance_check_record",
    "attendance_schedule_change",
    "attendance_overtime_duration",
    "attendance_approve_status_change",
    "attend_bossCheck_change",
    "attend_group_change",
    "attend_shift_change",
)
def attendance(event: Event) -> dict:
    """Check-ins, punches (records in ``dataList``; ``checkByUser`` false is a system replay, not
    a punch), overtime (``userid``, ``overtimeDay``, ``overtimeHour``), leave/overtime/trip
    approvals (``approveType``, ``status``), attendance results, groups and shifts."""
    return {"family": "attendance"}


@router.on("meetingroom_book", "meetingroom_room_info")
def meeting_room(event: Event) -> dict:
    """Meeting rooms: ``eventSubType`` says what happened (bookSuccess, bookCancel, ...; create,
    update, del); a cancellation carries only ``bookId`` to match it to its booking."""
    return {"family": "meeting_room"}


@router.on("hrm_user_record_change", "hrm_mdm_user_change")
def hr(event: Event) -> dict:
    """Smart HR (智能人事): ``hrm_user_record_change`` (``actionType``, ``staffId``: the file changed,
    read it through the API); ``hrm_mdm_user_change`` (``changeType`` 1 hire, 2 regularisation,
    3 transfer, 4 leave, 8 promotion, for ``staffId``)."""
    return {"family": "hr"}


@router.on("calendar_event_change", "todo_task_create", "todo_task_update", "todo_task_delete")
def collaboration(event: Event) -> dict:
    """Calendar events and to-do tasks (``taskId``, users as ``UnionIdList``)."""
    return {"family": "collaboration"}


@router.on(
    "suite_ticket",
    "tmp_auth_code",
    "change_auth",
    "suite_relieve",
    "org_micro_app_stop",
    "org_micro_app_restore",
    "org_suite_auth",
    "org_suite_change",
    "org_suite_relieve",
)
def third_party_suite(event: Event) -> dict:
    """Third-party (ISV) apps. Over SyncHTTP each ``bizData`` item arrives here as its own event,
    typed by its ``syncAction`` (``suite_ticket`` with ``suiteTicket``, ``org_suite_auth``, ...);
    the legacy push spells it ``SuiteTicket``: read ``event.first("suiteTicket", "SuiteTicket")``.
    See docs/synchttp.md. URL checks are answered built in."""
    return {"family": "suite"}


@router.catch_all
def unhandled(event: Event) -> dict:
    """Any EventType not registered above: acknowledged and logged with outcome ``unhandled``."""
    return {"family": "unknown"}
