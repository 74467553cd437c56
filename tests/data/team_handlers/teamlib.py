"""A module of the team's own, imported by its handlers.py, with a requirement the team added."""

import six


def label(event_type: str) -> str:
    return six.ensure_str("team:" + event_type)
