"""The product suite does not depend on the shipped handlers.py: run it again on a copy of the
project whose handlers.py is a team's (tests/data/team_handlers/), with a requirement the team
added (pinned in requirements.txt and the lock, installed as `make` would), and it must stay green.

Marked slow, and the copy runs every test but the slow ones (this one included): about as long
as the suite itself.
"""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TESTS

TEAM_FILES = os.path.join(TESTS, "data", "team_handlers")
TEAM_REQUIREMENT = "six==1.16.0"
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".fun", ".s"
)


@pytest.mark.slow
def test_the_product_suite_passes_with_a_team_handlers_module(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=NOT_COPIED, symlinks=True)
    os.symlink(os.path.join(ROOT, "node_modules"), project / "node_modules")
    for name in os.listdir(TEAM_FILES):
        shutil.copy2(os.path.join(TEAM_FILES, name), project / name)
    shutil.rmtree(project / "handler_tests")  # the shipped handlers' tests: a team replaces them
    for listing in ("requirements.txt", os.path.join("tools", "lock-python3.txt")):
        with open(project / listing, "a") as out:
            out.write(TEAM_REQUIREMENT + "\n")
    added = tmp_path / "added"  # what `make` would install into the venv from requirements.txt
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(added)]
    subprocess.run([*pip, TEAM_REQUIREMENT], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DINGTALK_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(added), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"\nproduct suite with a team's handlers.py: {summary}")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in summary
    assert "failed" not in summary
