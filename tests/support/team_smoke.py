"""Run by the runtime's interpreter (Python 3.6 too) on a team's package: import its handlers
(which import the team's own module, package and added requirement) and run one.

Usage: python -S team_smoke.py PACKAGE_FOLDER — prints the handler's extra fields as JSON.
"""

import json
import sys

sys.path[:0] = [sys.argv[1]]

import handlers  # noqa: E402
from dingtalk_fc.events import Event  # noqa: E402

plaintext = '{"EventType": "user_add_org", "userId": ["u1"]}'
route = handlers.router.route("user_add_org")
print(json.dumps(route.handler(Event(json.loads(plaintext), plaintext)), separators=(",", ":")))
