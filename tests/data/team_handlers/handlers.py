"""A team's handlers.py, nothing like the shipped one: the product suite must pass with it.

Other event types (``user_add_org``, which product tests use most, raises here), other returned
fields, a deferred handler, and an import of the team's own top-level module (``teamlib.py``,
copied next to it), which needs a requirement the team added (``requests``).
"""

import teamlib

from dingtalk_fc import Event, Router

router = Router()


@router.on("chat_add_member", "org_dept_create")
def onboard(event: Event) -> dict:
    return {"team_label": teamlib.label(event.type), "people": len(event.user_ids)}


@router.on("user_add_org", "bpms_instance_change", "user_leave_org")
def broken(event: Event) -> dict:
    raise RuntimeError("the team's back end is down")


@router.on("attendance_check_record", deferred=True)
def payroll(event: Event) -> dict:
    return {"erp_bytes": len(teamlib.erp_request(event.type, event.user_ids).body)}
