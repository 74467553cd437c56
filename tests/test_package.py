"""What gets deployed: the code package built without Docker, the Python 3.6 floor, and the
package imported and run by real 3.6, 3.10 and 3.12 interpreters."""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT, scan_for_leaks

sys.path.insert(0, os.path.join(ROOT, "tools"))
from package import LOCK_FILE, RUNTIMES, check_lock, find_interpreter, own_modules, pins, requirement_lines

DEPLOYED = own_modules(ROOT)
PACKAGE_TOOL = os.path.join(ROOT, "tools", "package.py")
VERMIN = os.path.join(os.path.dirname(sys.executable), "vermin")


def vermin(*paths):
    """The Python 3.6 floor check that `make test` runs too (see the Makefile's check-py36)."""
    command = [VERMIN, "--target=3.6-", "--violations", "--eval-annotations", "--no-tips", "--backport", "typing"]
    return subprocess.run([*command, *paths], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_deployed_code_needs_nothing_newer_than_python_36():
    result = vermin(*DEPLOYED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_would_catch_newer_syntax(tmp_path):
    sample = tmp_path / "newer.py"
    sample.write_text("if (n := 3):\n    print(f'{n=}')\n")
    assert vermin(str(sample)).returncode != 0


def package_tool(*args, root=ROOT):
    return subprocess.run(
        [sys.executable, PACKAGE_TOOL, "--root", str(root), *args], capture_output=True, text=True, timeout=600
    )


def build_package(runtime, archive, root=ROOT):
    """``tools/package.py``: the zip, and the folder it was made from (next to it)."""
    result = package_tool("--runtime", runtime, "--output", str(archive), root=root)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout.strip())  # the size, for `pytest -s`
    assert result.stdout.startswith(f"{runtime} (Python {RUNTIMES[runtime]}): {archive}, ")
    return os.path.splitext(str(archive))[0]


@pytest.fixture(scope="module", params=["python3", "python3.10", "python3.12"])
def package(request, tmp_path_factory):
    archive = tmp_path_factory.mktemp("package") / f"{request.param}.zip"
    return request.param, build_package(request.param, archive)


def files_under(path):
    return {os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files}


def test_package_holds_the_function_and_nothing_else(package):
    runtime, path = package
    names = set(os.listdir(path))
    wanted = set(pins(requirement_lines(os.path.join(ROOT, "requirements.txt"))))  # a team may change them
    assert {"index.py", "handlers.py", "dingtalk_crypto.py", "dingtalk_fc", "Crypto"} <= names
    assert ("redis" in names) is ("redis" in wanted)
    if runtime == "python3":  # Funcraft deploys to FC 2.0, whose API fc2 speaks
        assert ({"fc2", "requests"} <= names) is ("aliyun-fc2" in wanted)
    else:  # FC 3.0: the hand-off needs only the standard library
        assert not names & {"fc2", "requests", "urllib3"}
    assert not names & {"tests", "handler_tests", "tools", "dingtalk_fc_dev", "node_modules", "template.yml"}
    files = files_under(path)
    with zipfile.ZipFile(path + ".zip") as archive:
        assert set(archive.namelist()) == files  # the zip is the folder, paths relative to it
    parts = {part for name in files for part in name.split(os.sep)[:-1]}
    assert not parts & {"tests", "test", "SelfTest"}  # dependencies' test suites
    own_tag = "cpython-" + RUNTIMES[runtime].replace(".", "")
    foreign = [n for n in files if n.endswith(".pyc") and own_tag not in n]
    assert not foreign, foreign[:5]  # no bytecode for the build machine's Python
    aes = glob.glob(os.path.join(path, "Crypto", "Cipher", "_raw_aes*.so"))
    assert aes, "pycryptodome's compiled AES module"
    assert all(name.endswith(".abi3.so") for name in aes), aes  # cp36-abi3: loads on 3.6 and later
    version = RUNTIMES[runtime]
    if find_interpreter(version):  # bytecode for the target, so cold starts on FC need not compile
        tag = "cpython-" + version.replace(".", "")
        assert os.path.exists(os.path.join(path, "dingtalk_fc", "__pycache__", f"callback.{tag}.pyc"))
    with open(glob.glob(os.path.join(path, "pycryptodome-*.dist-info", "WHEEL"))[0]) as wheel:
        wheel_tags = wheel.read()
    assert "manylinux" in wheel_tags
    assert "x86_64" in wheel_tags
    assert not glob.glob(os.path.join(path, "*.dist-info", "RECORD"))  # pip's bookkeeping, not needed
    default = wanted == {"pycryptodome", "redis", "aliyun-fc2"}  # the product's own; a team's may be larger
    if runtime == "python3" and default and find_interpreter("3.6"):  # FC downloads it at cold starts
        # 3.4 MiB of it is the dependencies (pycryptodome 1.5, redis 0.5, fc2's requests stack);
        # the product's own modules are about 150 KiB
        assert os.path.getsize(path + ".zip") <= 3.6 * 2**20


def run_smoke(python, package, script, *args):
    """``tests/support/<script>`` under ``python`` with only the package (and the standard library) importable."""
    smoke = os.path.join(ROOT, "tests", "support", script)
    code = (
        f"import sys; sys.path[:0] = [{package!r}]; sys.argv = ['smoke'] + sys.argv[1:]; exec(open({smoke!r}).read())"
    )
    return subprocess.run([python, "-S", "-c", code, *args], capture_output=True, text=True, timeout=120, cwd="/")


@pytest.mark.parametrize("with_redis", [False, True], ids=["memory store", "redis store"])
def test_package_answers_under_its_runtime_python(package, redis_url, with_redis):
    runtime, path = package
    version = RUNTIMES[runtime]
    python = find_interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} interpreter on this machine")
    result = run_smoke(python, path, "smoke_deployed.py", *([redis_url] if with_redis else []))
    scan_for_leaks(result.stdout + result.stderr, f"package smoke {runtime}")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.split("SMOKE ", 1)[1])
    assert summary["python"] == version
    assert summary["crypto_module"] == path
    for delivery in ("check_url", "event", "duplicate"):
        assert summary[delivery] == {"status": "200 OK", "signature_ok": True, "message": "success"}
    assert summary["redis_loaded"] is with_redis
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["outcome"] for r in records] == ["handled", "handled", "duplicate"]


def test_python310_package_hands_off_through_fc3(tmp_path):
    """The python3.10 package under real Python 3.10: fc3_handler answers, and its deferred event
    reaches the local FC 3.0 invoke API signed with the package's own client."""
    from stubs.fc3_api import Fc3ApiStub

    from dingtalk_fc.defer import task_id_for

    python = find_interpreter("3.10")
    if python is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    output = build_package("python3.10", tmp_path / "python3.10.zip")
    stub = Fc3ApiStub(lambda payload, request_id: "handled", {"STS.smoke": ("smoke-secret", "smoke-token")})
    try:
        result = run_smoke(python, output, "smoke_fc3.py", stub.endpoint)
        stub.wait()
    finally:
        stub.close()
    scan_for_leaks(result.stdout + result.stderr, "package smoke fc3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.split("SMOKE ", 1)[1])
    assert summary["python"] == "3.10"
    for delivery in ("check_url", "event"):
        assert summary[delivery] == {"status": 200, "signature_ok": True, "message": "success"}
    assert summary["fc2_loaded"] is False
    [invocation] = stub.accepted()
    assert invocation["function"] == "dingtalk-worker"
    assert invocation["headers"]["x-acs-security-token"] == "smoke-token"
    assert invocation["task_id"] == task_id_for("dingsmoketest0000003:smoke-fc3-1")
    assert "sealed" in json.loads(invocation["body"])
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["outcome"] for r in records] == ["handled", "deferred"]


def test_package_imports_its_own_handlers_under_its_runtime_python(package):
    """The package's handlers.py (whatever the team made of it) imports on the target Python."""
    runtime, path = package
    python = find_interpreter(RUNTIMES[runtime])
    if python is None:
        pytest.skip(f"no Python {RUNTIMES[runtime]} interpreter on this machine")
    code = f"import sys; sys.path[:0] = [{path!r}]; import handlers, index; print(type(handlers.router).__name__)"
    result = subprocess.run([python, "-S", "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Router"]


TEAM_HANDLERS = """\
import six

import teamlib
from dingtalk_fc import Router
from teampkg.hr import record

router = Router()


@router.on("user_add_org")
def hire(event):
    return {"team": teamlib.NAME, "six": six.PY3, "record": record(event.user_ids)}
"""


@pytest.fixture(scope="module")
def team_project(tmp_path_factory):
    """A copy of the project as a team makes it: handlers.py importing a module and a package of
    its own and an added requirement (six), pinned in requirements.txt and the lock."""
    root = tmp_path_factory.mktemp("team")
    for name in own_modules(ROOT):
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy2
        copy(os.path.join(ROOT, name), root / name)
    (root / "tools").mkdir()
    shutil.copy2(os.path.join(ROOT, LOCK_FILE), root / LOCK_FILE)
    shutil.copy2(os.path.join(ROOT, "requirements.txt"), root / "requirements.txt")
    (root / "handlers.py").write_text(TEAM_HANDLERS)
    (root / "teamlib.py").write_text('NAME = "people-ops"\n')
    (root / "teampkg").mkdir()
    (root / "teampkg" / "__init__.py").write_text("")
    (root / "teampkg" / "hr.py").write_text("def record(user_ids):\n    return len(user_ids)\n")
    (root / "notes").mkdir()  # not a package: stays out
    (root / "notes" / "draft.py").write_text("")
    for name in ("requirements.txt", LOCK_FILE):
        with open(root / name, "a") as out:
            out.write("six==1.16.0\n")
    return root


@pytest.mark.parametrize("runtime", ["python3", "python3.10"])
def test_team_modules_and_requirements_are_packaged(team_project, tmp_path, runtime):
    path = build_package(runtime, tmp_path / f"{runtime}.zip", root=team_project)
    names = set(os.listdir(path))
    assert {"handlers.py", "teamlib.py", "teampkg", "six.py"} <= names
    assert "notes" not in names
    python = find_interpreter(RUNTIMES[runtime])
    if python is None:
        pytest.skip(f"no Python {RUNTIMES[runtime]} interpreter on this machine")
    smoke = os.path.join(ROOT, "tests", "support", "team_smoke.py")
    result = subprocess.run([python, "-S", smoke, path], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"team": "people-ops", "six": True, "record": 1}


PROBE = "dingtalk-fc-lock-probe"  # a name no team ships: the check fails before anything installs


@pytest.mark.parametrize(
    ("lock_line", "message"),
    [
        ("", f"{PROBE} is in requirements.txt but missing from tools/lock-python3.txt"),
        (f"{PROBE}==0.9\n", f"{PROBE} is pinned 1.0 in requirements.txt but 0.9 in tools/lock-python3.txt"),
    ],
    ids=["missing", "pinned differently"],
)
def test_a_lock_that_disagrees_with_the_requirements_fails_the_build(tmp_path, lock_line, message):
    (tmp_path / "tools").mkdir()
    with open(os.path.join(ROOT, LOCK_FILE)) as source:
        (tmp_path / LOCK_FILE).write_text(source.read() + lock_line)
    with open(os.path.join(ROOT, "requirements.txt")) as source:
        (tmp_path / "requirements.txt").write_text(source.read() + f"{PROBE}==1.0\n")
    result = package_tool("--runtime", "python3", "--output", str(tmp_path / "out.zip"), root=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {message}: refresh the lock with `make lock`"
    assert not (tmp_path / "out.zip").exists()


def test_the_lock_agrees_with_the_requirements():
    assert check_lock(ROOT) == os.path.join(ROOT, LOCK_FILE)
