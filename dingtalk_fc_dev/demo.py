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


class IncompleteCredentials(ValueError):
    """Some DINGTALK_* credentials are set and some are not: neither the app's keys nor the demo's."""


def credentials_from(environ: Mapping[str, str]) -> Dict[str, str]:
    """The three DINGTALK_* credentials from ``environ``, or the demo ones when none is set.

    Raises :class:`IncompleteCredentials` naming the missing ones when only some are set: mixing
    one's own token with a demo key would only produce signature or decryption failures later.
    """
    present = {name: environ.get(name, "").strip() for name in CREDENTIAL_VARIABLES}
    missing = [name for name, value in present.items() if not value]
    if len(missing) == len(CREDENTIAL_VARIABLES):
        return dict(DEMO_ENVIRONMENT)
    if missing:
        raise IncompleteCredentials(
            f"{' and '.join(missing)} not set: set all of {', '.join(CREDENTIAL_VARIABLES)}, "
            "or none of them for the demo keys"
        )
    return present
