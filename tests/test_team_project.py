"""A team's project after its first week, and the product suite judging only what the product ships.

The copy: a team's handlers.py and module (tests/data/team_handlers/; ``user_add_org`` raises),
``requests`` added to requirements.txt and the lock (installed as `make` would), handler_tests/
deleted. Two proofs that the product suite stays green against it:

* by default, the product tests that can see handlers.py or the requirements: those whose source
  imports ``index`` or ``handlers`` (index imports handlers.py) or uses a conftest fixture that
  does, names requirements.txt, or runs tools/package.py or tools/bench.py. They are found by
  scanning the sources, so a new such test is included; the rest run over the product router
  and the library, which a team does not change;
* marked slow (`make test-slow`, CI): the whole suite in the copy.

And `make check` there: green with no handler tests at all, red when the team's own folder fails.
"""

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TESTS

TEAM_FILES = os.path.join(TESTS, "data", "team_handlers")
TEAM_REQUIREMENT = "requests==2.27.1"  # the newest release that runs on Python 3.6
LOCK_FILE = os.path.join("tools", "lock-python3.txt")
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".fun", ".s"
)
SEES_THE_TEAM = re.compile(
    r"\b(import|from) (index|handlers)\b|requirements\.txt|\bfrom package import\b|\b(package|bench)\.py\b"
)


def copy_project(destination):
    shutil.copytree(ROOT, destination, ignore=NOT_COPIED, symlinks=True)
    os.symlink(os.path.join(ROOT, "node_modules"), destination / "node_modules")
    shutil.rmtree(destination / "handler_tests", ignore_errors=True)  # a team may have deleted it already
    return destination


@pytest.fixture(scope="module")
def team_project(tmp_path_factory):
    """The team's copy, and the environment its `make test` would run in."""
    project = copy_project(tmp_path_factory.mktemp("team") / "project")
    for name in os.listdir(TEAM_FILES):
        shutil.copy2(os.path.join(TEAM_FILES, name), project / name)
    with open(project / "requirements.txt", "a") as out:
        out.write(TEAM_REQUIREMENT + "\n")
    with open(project / LOCK_FILE) as source:
        locked = {line.split("==")[0].strip().lower() for line in source if "==" in line and not line.startswith("#")}
    if "requests" not in locked:
        with open(project / LOCK_FILE, "a") as out:
            out.write(TEAM_REQUIREMENT + "\n")
    added = project.parent / "added"  # what `make` would install into the venv from requirements.txt
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(added)]
    subprocess.run([*pip, TEAM_REQUIREMENT], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DINGTALK_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(added), env.get("PYTHONPATH")]))
    return project, env


def source(path):
    with open(path, encoding="utf-8") as text:
        return text.read()


def fixtures_that_see_the_team():
    """conftest.py's fixtures that import index (or use one that does), by name."""
    text = source(os.path.join(TESTS, "conftest.py"))
    fixtures = {
        node.name: (ast.get_source_segment(text, node), [argument.arg for argument in node.args.args])
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef) and "fixture" in ast.dump(node)
    }
    seeing = {name for name, (body, _) in fixtures.items() if SEES_THE_TEAM.search(body)}
    while True:
        more = {name for name, (_, arguments) in fixtures.items() if seeing & set(arguments)} - seeing
        if not more:
            return seeing
        seeing |= more


def files_that_see_the_team():
    own = os.path.basename(__file__)
    names = sorted(n for n in os.listdir(TESTS) if n.startswith("test_") and n.endswith(".py") and n != own)
    fixtures = fixtures_that_see_the_team()
    uses = re.compile(r"\b(" + "|".join(sorted(fixtures)) + r")\b") if fixtures else None

    def sees(text):
        return bool(SEES_THE_TEAM.search(text) or (uses and uses.search(text)))

    return [os.path.join("tests", n) for n in names if sees(source(os.path.join(TESTS, n)))]


def run_product_suite(team_project, *paths):
    project, env = team_project
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", *paths],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"\nproduct suite with a team's project ({' '.join(paths)}): {summary}")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in summary
    assert "failed" not in summary


def test_the_scan_finds_the_tests_that_import_the_function():
    found = files_that_see_the_team()
    assert os.path.join("tests", "test_package.py") in found  # builds the package from requirements.txt
    assert os.path.join("tests", "test_callback.py") not in found  # the product router only
    importing = [p for p in found if re.search(r"^\s*import index\b", source(os.path.join(ROOT, p)), re.M)]
    assert importing, "the tests that call index's entrypoints"
    assert os.path.join("tests", "test_budget.py") in found  # through conftest's deferred_function


def test_the_product_tests_that_see_handlers_and_requirements_pass_in_a_team_project(team_project):
    run_product_suite(team_project, *files_that_see_the_team())


@pytest.mark.slow
def test_the_whole_product_suite_passes_in_a_team_project(team_project):
    run_product_suite(team_project, "tests", "--ignore=tests/test_team_project.py")  # not this file again


def make_check(project):
    """`make check` in ``project`` with this checkout's virtualenv (never rebuilt from the copy)."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    stamp = os.path.join(venv, ".installed")
    command = ["make", "--no-print-directory", "check", f"VENV={venv}", "-o", stamp]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=120)


def test_make_check_runs_the_teams_own_tests_and_nothing_when_there_are_none(tmp_path):
    project = copy_project(tmp_path / "project")
    result = make_check(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no handler tests" in result.stdout
    (project / "hr_tests").mkdir()  # the team's own folder, named in testpaths as the docs say
    (project / "hr_tests" / "test_hires.py").write_text(
        "def test_hires_are_counted(callback_harness):\n    assert callback_harness.records == []\n\n\n"
        "def test_leavers_are_counted():\n    assert 1 + 1 == 3\n"
    )
    pyproject = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        pyproject.replace('testpaths = ["tests", ', 'testpaths = ["tests", "hr_tests", ')
    )
    result = make_check(project)
    assert result.returncode != 0
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
