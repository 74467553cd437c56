"""What gets deployed: template.yml under the real `fun validate`, the Python 3.6 floor, and
the code package built without Docker, imported by real 3.6 and 3.10 interpreters."""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import ROOT, scan_for_leaks

sys.path.insert(0, os.path.join(ROOT, "tools"))
from package import LOCK_FILE, RUNTIMES, check_lock, find_interpreter, own_modules, pins, requirement_lines

FUN = os.path.join(ROOT, "node_modules", ".bin", "fun")
DEPLOYED = own_modules(ROOT)
PACKAGE_TOOL = os.path.join(ROOT, "tools", "package.py")


TEMPLATE = os.path.join(ROOT, "template.yml")
VERMIN = os.path.join(os.path.dirname(sys.executable), "vermin")


def load_template(path=TEMPLATE):
    with open(path, encoding="utf-8") as source:
        return yaml.safe_load(source)


def fun_validate(path):
    return subprocess.run([FUN, "validate", "-t", path], capture_output=True, text=True, timeout=120)


def without_vpc(template):
    """The variant without Redis: the in-memory store, no VPC."""
    service = template["Resources"]["dingtalk-callback"]
    del service["Properties"]["VpcConfig"]
    del service["callback"]["Properties"]["EnvironmentVariables"]["DINGTALK_DEDUP_REDIS_URL"]
    del template["Parameters"]["DedupRedisUrl"]


@pytest.mark.parametrize("mutate", [None, without_vpc], ids=["as shipped: HTTPS, Redis in a VPC", "no VPC"])
def test_template_passes_fun_validate(tmp_path, mutate):
    path = TEMPLATE
    if mutate:
        template = load_template()
        mutate(template)
        path = tmp_path / "template.yml"
        path.write_text(yaml.safe_dump(template))
    result = fun_validate(str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (
            lambda t: t["Resources"]["dingtalk-callback"]["callback"]["Properties"].update(Runtime="python3.10"),
            "Runtime",
        ),
        (lambda t: t["Resources"]["dingtalk-callback"]["callback"]["Properties"].pop("Handler"), "Handler"),
        (lambda t: t["Resources"]["dingtalk-callback"]["Properties"]["LogConfig"].update(LogStore="x"), "LogStore"),
    ],
    ids=["python3.10 runtime", "no handler", "LogStore spelling"],
)
def test_fun_validate_catches_a_broken_template(tmp_path, mutate, complaint):
    template = load_template()
    mutate(template)
    broken = tmp_path / "template.yml"
    broken.write_text(yaml.safe_dump(template))
    result = fun_validate(str(broken))
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr


def test_template_declares_the_function_the_product_needs():
    resources = load_template()["Resources"]
    service = resources["dingtalk-callback"]
    assert set(service["Properties"]["LogConfig"]) == {"Project", "Logstore"}
    callback = service["callback"]["Properties"]
    assert callback["Handler"] == "index.handler"
    assert callback["Initializer"] == "index.initializer"
    assert callback["Runtime"] == "python3"
    environment = callback["EnvironmentVariables"]
    parameters = load_template()["Parameters"]
    for variable, parameter in [
        ("DINGTALK_TOKEN", "DingTalkToken"),
        ("DINGTALK_AES_KEY", "DingTalkAesKey"),
        ("DINGTALK_APP_KEY", "DingTalkAppKey"),
        ("DINGTALK_DEDUP_REDIS_URL", "DedupRedisUrl"),
    ]:
        assert environment[variable] == {"Ref": parameter}  # a value never sits in the file
    secrets = ("DingTalkToken", "DingTalkAesKey", "DingTalkAppSecret", "DedupRedisUrl")
    assert all(parameters[name]["NoEcho"] for name in secrets)
    assert environment["DINGTALK_WORKER_FUNCTION"] == "worker"
    assert set(service["Properties"]["VpcConfig"]) == {"VpcId", "VSwitchIds", "SecurityGroupId"}
    trigger = service["callback"]["Events"]["http-trigger"]
    assert trigger["Type"] == "HTTP"
    assert trigger["Properties"] == {"AuthType": "ANONYMOUS", "Methods": ["GET", "HEAD", "POST"]}  # HEAD: monitors
    worker = service["worker"]["Properties"]
    assert worker["Handler"] == "index.worker"
    assert worker["AsyncConfiguration"]["StatefulInvocation"] is True
    assert worker["AsyncConfiguration"]["MaxAsyncRetryAttempts"] >= 1
    assert "OnFailure" in worker["AsyncConfiguration"]["Destination"]
    domains = [r for r in resources.values() if r["Type"] == "Aliyun::Serverless::CustomDomain"]
    routes = domains[0]["Properties"]["RouteConfig"]["Routes"]
    assert list(routes.values()) == [{"ServiceName": "dingtalk-callback", "FunctionName": "callback"}]
    assert domains[0]["Properties"]["Protocol"] == "HTTP,HTTPS"
    certificate = domains[0]["Properties"]["CertConfig"]
    assert certificate["Certificate"].endswith(".pem")  # Funcraft reads .pem paths: no key in the file
    assert certificate["PrivateKey"].endswith(".pem")
    assert callback["CodeUri"] == worker["CodeUri"] == "./build/run-make-package/python3.zip"


def fun_build(folder):
    """The real `fun build` (without Docker: there is none here) in ``folder``, HOME of its own."""
    home = folder / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([FUN, "build"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_fun_build_on_a_clean_clone_points_at_make_package(tmp_path):
    shutil.copy2(TEMPLATE, tmp_path / "template.yml")
    result = fun_build(tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if "not exist" in line]
    assert len(errors) == 1
    assert f"CodeUri {tmp_path}/build/run-make-package/python3.zip is not exist" in errors[0]


def test_fun_build_after_make_package_keeps_the_package(tmp_path):
    shutil.copy2(TEMPLATE, tmp_path / "template.yml")
    (tmp_path / "build" / "run-make-package").mkdir(parents=True)
    package_zip = tmp_path / "build" / "run-make-package" / "python3.zip"
    with zipfile.ZipFile(package_zip, "w") as bundle:
        bundle.writestr("index.py", "")
    result = fun_build(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    built = load_template(tmp_path / ".fun" / "build" / "artifacts" / "template.yml")
    service = built["Resources"]["dingtalk-callback"]
    for function in ("callback", "worker"):
        code_uri = service[function]["Properties"]["CodeUri"]
        assert (tmp_path / ".fun" / "build" / "artifacts" / code_uri).resolve() == package_zip


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
        assert os.path.exists(os.path.join(path, "dingtalk_fc", "__pycache__", f"pipeline.{tag}.pyc"))
    with open(glob.glob(os.path.join(path, "pycryptodome-*.dist-info", "WHEEL"))[0]) as wheel:
        wheel_tags = wheel.read()
    assert "manylinux" in wheel_tags
    assert "x86_64" in wheel_tags
    assert not glob.glob(os.path.join(path, "*.dist-info", "RECORD"))  # pip's bookkeeping, not needed
    default = wanted == {"pycryptodome", "redis", "aliyun-fc2"}  # the product's own; a team's may be larger
    if runtime == "python3" and default and find_interpreter("3.6"):  # FC downloads it at cold starts
        assert os.path.getsize(path + ".zip") <= 3.5 * 2**20


def run_smoke(python, package, script, *args):
    """``tests/<script>`` under ``python`` with only the package (and the standard library) importable."""
    smoke = os.path.join(ROOT, "tests", script)
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
    from fc3_api_stub import Fc3ApiStub

    from dingtalk_fc.pipeline import task_id_for

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
    smoke = os.path.join(ROOT, "tests", "team_smoke.py")
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
