"""A module of the team's own, imported by its handlers.py."""


def label(event_type: str) -> str:
    return "team:" + event_type
