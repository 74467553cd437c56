"""Embedded demo credentials for ``make run`` and the command-line tool.

They are the published test vector of DingTalk's official sample (token ``mryue``), so a
demo can never be mistaken for, or collide with, a real app's keys.
"""

from typing import Dict, Mapping

DEMO_ENVIRONMENT = {
    "DINGTALK_TOKEN": "mryue",
    "DINGTALK_AES_KEY": "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7",
    "DINGTALK_APP_KEY": "ding6ccabc44d2c8d38b",
}
CREDENTIAL_VARIABLES = tuple(DEMO_ENVIRONMENT)


def credentials_from(environ: Mapping[str, str]) -> Dict[str, str]:
    """The three DINGTALK_* credentials from ``environ``, or the demo ones when none is set."""
    if any(environ.get(name) for name in CREDENTIAL_VARIABLES):
        return {name: environ.get(name, "") for name in CREDENTIAL_VARIABLES}
    return dict(DEMO_ENVIRONMENT)
