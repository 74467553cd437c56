"""A module of the team's own, imported by its handlers.py, with a requirement the team added."""

import requests

ERP_URL = "http://127.0.0.1:9/erp/approvals"  # built, never sent: the product's tests make no call


def label(event_type: str) -> str:
    return "team:" + event_type


def erp_request(event_type: str, user_ids: list) -> "requests.PreparedRequest":
    """What the team would post to its ERP, prepared by requests."""
    return requests.Request("POST", ERP_URL, json={"type": event_type, "users": user_ids}).prepare()
