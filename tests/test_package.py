"""What gets deployed: the code package built without Docker, the Python 3.6 floor, and the
package imported and run by real 3.6, 3.10 and 3.12 interpreters."""

import email.parser
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT, scan_for_leaks
from support.wheels import write_wheel

sys.path.insert(0, os.path.join(ROOT, "tools"))
from package import (
    LOCK_FILE,
    RUNTIME_ONLY,
    RUNTIMES,
    TARGET_PYTHON,
    check_lock,
    find_interpreter,
    own_modules,
    pins,
    requirement_lines,
    requirement_name,
    runtime_requirements,
)
from packaging.markers import Marker
from packaging.requirements import Requirement

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


def package_tool(*args, root=ROOT, env=None):
    return subprocess.run(
        [sys.executable, PACKAGE_TOOL, "--root", str(root), *args], capture_output=True, text=True, timeout=600, env=env
    )


def build_package(runtime, archive, root=ROOT):
    """``tools/package.py``: the zip, and the folder it was made from (next to it)."""
    result = package_tool("--runtime", runtime, "--output", str(archive), root=root)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout.strip())  # the size, for `pytest -s`
    assert result.stdout.startswith(f"{runtime} (Python {RUNTIMES[runtime]}): {archive}, ")
    return os.path.splitext(str(archive))[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``built(runtime)``: the folder of this project's package for ``runtime``, built once."""
    cache = {}

    def build(runtime):
        if runtime not in cache:
            cache[runtime] = build_package(runtime, tmp_path_factory.mktemp("package") / f"{runtime}.zip")
        return cache[runtime]

    return build


@pytest.fixture(params=["python3", "python3.10", "python3.12"])
def package(request, built):
    return request.param, built(request.param)


def distributions(path):
    """``{name: (version, [Requirement])}`` of the distributions a package folder ships."""
    found = {}
    for metadata in glob.glob(os.path.join(path, "*.dist-info", "METADATA")):
        with open(metadata, encoding="utf-8") as source:
            fields = email.parser.HeaderParser().parse(source)
        requires = [Requirement(value) for value in fields.get_all("Requires-Dist") or []]
        found[requirement_name(fields["Name"])] = (fields["Version"], requires)
    return found


def needed(runtime, requirement_names, shipped):
    """The requirements and, through the shipped metadata, everything they need on the runtime's Python."""
    version = TARGET_PYTHON.get(runtime, RUNTIMES[runtime])
    environment = {"python_version": RUNTIMES[runtime], "python_full_version": version, "extra": ""}
    todo, seen = list(requirement_names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in shipped:
            seen.add(name)
            continue
        seen.add(name)
        for requirement in shipped[name][1]:
            if requirement.marker is None or Marker(str(requirement.marker)).evaluate(environment):
                todo.append(requirement_name(requirement.name))
    return seen


def files_under(path):
    return {os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files}


def test_package_holds_the_function_and_nothing_else(package):
    runtime, path = package
    names = set(os.listdir(path))
    wanted = set(pins(requirement_lines(os.path.join(ROOT, "requirements.txt"))))  # a team may change them
    assert {"index.py", "handlers.py", "dingtalk_crypto.py", "dingtalk_fc", "Crypto"} <= names
    assert ("redis" in names) is ("redis" in wanted)
    shipped = distributions(path)
    listed = {requirement_name(line) for line in runtime_requirements(ROOT, runtime)}
    for_runtime = {name for name in listed if runtime in RUNTIME_ONLY.get(name, {runtime})}
    if runtime == "python3":  # Funcraft deploys to FC 2.0, whose API fc2 speaks
        assert ("fc2" in names) is ("aliyun-fc2" in wanted)
    else:  # FC 3.0: the deferral needs only the standard library
        assert "fc2" not in names
        assert "aliyun-fc2" not in shipped
    # every requirement, and nothing that no requirement needs (what fc2 alone needs stays out of FC 3.0's)
    assert set(shipped) == needed(runtime, for_runtime, shipped), sorted(shipped)
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


TEAM_REQUIREMENT = "requests==2.27.1"  # the newest release that runs on Python 3.6
TEAM_HANDLERS = """\
import requests

import teamlib
from dingtalk_fc import Router
from teampkg.hr import record

router = Router()


@router.on("user_add_org")
def hire(event):
    return {"team": teamlib.NAME, "requests": requests.__version__, "record": record(event.user_ids)}
"""


@pytest.fixture(scope="module")
def team_project(tmp_path_factory):
    """A copy of the project as a team makes it: handlers.py importing a module and a package of
    its own and an added requirement (requests), pinned in requirements.txt and the lock."""
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
    with open(root / "requirements.txt", "a") as out:
        out.write(TEAM_REQUIREMENT + "\n")
    if requirement_name(TEAM_REQUIREMENT) not in pins(requirement_lines(root / LOCK_FILE)):
        with open(root / LOCK_FILE, "a") as out:
            out.write(TEAM_REQUIREMENT + "\n")
    return root


@pytest.mark.parametrize("runtime", ["python3", "python3.10"])
def test_team_modules_and_requirements_are_packaged(team_project, tmp_path, runtime):
    path = build_package(runtime, tmp_path / f"{runtime}.zip", root=team_project)
    names = set(os.listdir(path))
    assert {"handlers.py", "teamlib.py", "teampkg", "requests"} <= names
    assert "notes" not in names
    python = find_interpreter(RUNTIMES[runtime])
    if python is None:
        pytest.skip(f"no Python {RUNTIMES[runtime]} interpreter on this machine")
    smoke = os.path.join(ROOT, "tests", "support", "team_smoke.py")
    result = subprocess.run([python, "-S", smoke, path], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    version = TEAM_REQUIREMENT.split("==")[1]  # the same release in both zips
    assert json.loads(result.stdout.splitlines()[-1]) == {"team": "people-ops", "requests": version, "record": 1}


def test_both_zips_ship_the_lock_releases_where_they_serve_both(built):
    """Unpinned dependencies resolve to the lock's releases for FC 3.0 too, not to whatever is
    newest that day: the python3 and python3.10 packages ship the same versions."""
    fc2, fc3 = distributions(built("python3")), distributions(built("python3.10"))
    common = sorted(set(fc2) & set(fc3))
    assert len(common) >= 3  # the requirements and their dependencies
    assert {name: fc3[name][0] for name in common} == {name: fc2[name][0] for name in common}


def test_a_runtime_requirements_file_repins_for_that_runtime_only(team_project, tmp_path):
    """A team on FC 3.0 alone: requirements-python3.10.txt pins a release with no 3.6 build, and
    only the python3.10 package ships it (the python3 one keeps the lock's)."""
    newer = "requests==2.32.3"
    (team_project / "requirements-python3.10.txt").write_text(newer + "\n")
    try:
        fc3 = distributions(build_package("python3.10", tmp_path / "python3.10.zip", root=team_project))
    finally:
        (team_project / "requirements-python3.10.txt").unlink()
    assert fc3["requests"][0] == newer.split("==")[1]
    assert pins(requirement_lines(team_project / LOCK_FILE))["requests"] == TEAM_REQUIREMENT.split("==")[1]


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


@pytest.fixture(scope="module")
def offline_index(tmp_path_factory):
    """The environment for pip to read a folder of made-up releases instead of an index, with
    pip 21.3.1 for the lock's virtualenv (downloaded once, by name)."""
    python = find_interpreter("3.6")
    if python is None:
        pytest.skip("no Python 3.6 interpreter on this machine")
    folder = tmp_path_factory.mktemp("wheels")
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    fetched = subprocess.run([*download, "--python-version", "3.6", "--dest", str(folder), "pip==21.3.1"], timeout=300)
    if fetched.returncode != 0:
        pytest.skip("pip 21.3.1 cannot be downloaded here")
    write_wheel(folder, "lockapp", "1.0", requires=["lockdep>=1.0"])
    write_wheel(folder, "lockapp", "1.1", requires=["lockdep>=1.1"])
    write_wheel(folder, "lockdep", "1.0")
    write_wheel(folder, "lockdep", "1.1")
    write_wheel(folder, "locknew", "1.0", requires_python=">=3.6")
    write_wheel(folder, "locknew", "2.0", requires_python=">=3.8")
    write_wheel(folder, "lockfussy", "3.0", requires_python=">=3.6.8")  # as pyparsing 3.1 does
    return {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(folder)}


def lock_project(root, requirements, lock=""):
    (root / "tools").mkdir(exist_ok=True)
    (root / "requirements.txt").write_text(requirements)
    (root / LOCK_FILE).write_text(lock)
    return root


def refresh(root, env):
    return package_tool("--refresh-lock", root=root, env=env)


def test_a_lock_refresh_keeps_the_pins_nobody_asked_to_change_and_says_what_changed(offline_index, tmp_path):
    root = lock_project(tmp_path, "lockapp==1.0\n", "lockapp==1.0\nlockdep==1.0\n")
    result = refresh(root, offline_index)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "no pin changed"
    assert pins(requirement_lines(root / LOCK_FILE)) == {"lockapp": "1.0", "lockdep": "1.0"}  # not the newer 1.1
    (root / "requirements.txt").write_text("lockapp==1.1\n")  # which needs lockdep 1.1
    result = refresh(root, offline_index)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["changed lockapp 1.0 -> 1.1", "changed lockdep 1.0 -> 1.1"]
    assert pins(requirement_lines(root / LOCK_FILE)) == {"lockapp": "1.1", "lockdep": "1.1"}


def test_a_pin_with_no_release_for_python_36_is_one_line_naming_the_newest_that_runs(offline_index, tmp_path):
    root = lock_project(tmp_path, "locknew==2.0\n")
    result = refresh(root, offline_index)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    target = TARGET_PYTHON["python3"]
    assert result.stderr.strip().splitlines() == [
        f"error: locknew==2.0 has no release for Python {target} (FC's python3 runtime): the newest that does is"
        " locknew==1.0; for FC 3.0 only, pin it in requirements-python3.10.txt"
    ]


def test_make_lock_and_make_package_target_the_same_python_36(offline_index, tmp_path):
    """A release that needs 3.6.8 (pyparsing 3.1 does): the lock picks it under FC's exact
    Python, and the package, asking pip for that same version, installs it."""
    root = lock_project(tmp_path, "lockfussy==3.0\n")
    result = refresh(root, offline_index)
    assert result.returncode == 0, result.stderr
    assert pins(requirement_lines(root / LOCK_FILE)) == {"lockfussy": "3.0"}
    archive = tmp_path / "python3.zip"
    result = package_tool("--runtime", "python3", "--output", str(archive), root=root, env=offline_index)
    assert result.returncode == 0, result.stderr
    assert distributions(str(tmp_path / "python3"))["lockfussy"][0] == "3.0"
