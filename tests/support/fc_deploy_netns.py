"""Run a command next to the FC deploy API stub, both inside a loopback-only network namespace.

    unshare -rn python fc_deploy_netns.py STATE_DIR COMMAND...

Brings ``lo`` up, serves tests/stubs/fc2_deploy_api.py on 127.0.0.1 for the account in
STATE_DIR/account.json (``account_id``, ``region``, ``credentials``: key id -> secret; its state
loaded from and saved to STATE_DIR), runs COMMAND with ``FC_ENDPOINT`` pointing there and exits with its code.
Nothing else is reachable from the namespace: no DNS, no other host.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stubs.fc2_deploy_api import FcDeployApi


def main(argv):
    state_dir, command = argv[0], argv[1:]
    with open(os.path.join(state_dir, "account.json"), encoding="utf-8") as source:
        account = json.load(source)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    api = FcDeployApi(account["credentials"], account["account_id"], account["region"], state_dir)
    try:
        env = dict(os.environ, FC_ENDPOINT=api.endpoint)
        return subprocess.run(command, env=env).returncode
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
