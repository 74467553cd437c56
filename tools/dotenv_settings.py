"""The function's settings from the untracked ``.env``, for ``make package`` to bake into the
python3 zip (read back by ``dingtalk_fc/packaged_settings.py``).

``.env`` is the one place a deployer's values live: Funcraft reads its credentials from it,
Serverless Devs fills ``s.yaml``'s ``${env(...)}`` from it, and every other variable in it is a
setting of the function (DingTalk's keys, the app secret, the Redis URL, a team's own). The
deploy tools' own variables (credentials, endpoints, switches) are never baked.
"""

import json
import os
import re
from typing import Dict, List, Tuple

from dingtalk_fc.config import ConfigError, load_settings
from dingtalk_fc.packaged_settings import FILE_NAME

DOTENV = ".env"
# Funcraft's profile variables (its profile.js) and the prefixes of the tools' own switches and
# endpoints (FUN_*, FC_*: FC also reserves FC_* inside functions) and cloud credentials.
DEPLOY_TOOL_VARIABLES = {
    "ACCOUNT_ID",
    "DEFAULT_REGION",
    "REGION",
    "ACCESS_KEY_ID",
    "ACCESS_KEY_SECRET",
    "SECURITY_TOKEN",
    "TIMEOUT",
    "RETRIES",
    "ENABLE_CUSTOM_ENDPOINT",
    "IGNORE_TPL_VALIDATION",
}
DEPLOY_TOOL_PREFIXES = ("FC_", "FUN_", "ALIBABA_CLOUD_", "ALIYUN_")
# dotenv 16's grammar (Serverless Devs 3.1.10 parses with it): KEY=value, optional `export `,
# a value quoted with ' " or `, else up to a `#`, which starts a comment.
LINE = re.compile(
    r"""^\s*(?:export\s+)?(?P<name>[\w.-]+)\s*=\s*"""
    r"""(?P<value>'[^']*'|"(?:\\"|[^"])*"|`[^`]*`|[^#\r\n]*)\s*(?:\#.*)?$"""
)


class DotenvError(Exception):
    """``.env`` cannot be read or holds an invalid setting; the message names the line or variable."""


def parse(text: str) -> Dict[str, str]:
    """``{name: value}`` of a ``.env`` file; the message of an error never holds a value."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = LINE.match(line)
        if not match:
            raise DotenvError(f"{DOTENV} line {number} is not NAME=value (one line per variable)")
        value = match["value"].strip()
        if value[:1] in "'\"`" and len(value) > 1 and value[0] == value[-1]:
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = value.replace("\\n", "\n").replace("\\r", "\r").replace('\\"', '"')
        values[match["name"]] = value
    return values


def function_settings(values: Dict[str, str]) -> Tuple[Dict[str, str], List[str]]:
    """The function's settings, and the names left out as the deploy tools' own."""
    tools = sorted(n for n in values if n in DEPLOY_TOOL_VARIABLES or n.startswith(DEPLOY_TOOL_PREFIXES))
    return {n: v for n, v in values.items() if n not in tools}, tools


def bake(root: str, output: str) -> str:
    """Write ``.env``'s function settings into ``output`` (the package folder), checked as the
    function checks them at start-up; return a one-line summary naming variables, never values."""
    path = os.path.join(root, DOTENV)
    if not os.path.exists(path):
        return f"no {DOTENV}: the package carries no settings (the function needs them in its environment)"
    with open(path, encoding="utf-8") as source:
        settings, left_out = function_settings(parse(source.read()))
    if not settings:  # only the tools' credentials: the settings are set elsewhere (s, the shell)
        return f"{DOTENV} holds no function settings: the package carries none"
    try:
        if any(name.startswith("DINGTALK_") for name in settings):
            load_settings(settings)
    except ConfigError as error:
        raise DotenvError(f"{DOTENV}: {error}") from None
    with open(os.path.join(output, FILE_NAME), "w", encoding="utf-8") as out:
        json.dump(settings, out, sort_keys=True)
    summary = f"settings from {DOTENV} in the package: {', '.join(sorted(settings))}"
    return summary + (f" (left out, the deploy tools' own: {', '.join(left_out)})" if left_out else "")
