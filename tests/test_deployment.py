"""What gets deployed: template.yml under the real `fun validate`, the Python 3.6 floor, and
the code package built without Docker, imported by real 3.6 and 3.10 interpreters."""

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, scan_for_leaks

sys.path.insert(0, os.path.join(ROOT, "tools"))
from package import RUNTIMES, find_interpreter

FUN = os.path.join(ROOT, "node_modules", ".bin", "fun")
DEPLOYED = ["index.py", "handlers.py", "dingtalk_crypto.py", "dingtalk_fc"]


TEMPLATE = os.path.join(ROOT, "template.yml")
VERMIN = os.path.join(os.path.dirname(sys.executable), "vermin")


def load_template(path=TEMPLATE):
    with open(path, encoding="utf-8") as source:
        return yaml.safe_load(source)


def fun_validate(path):
    return subprocess.run([FUN, "validate", "-t", path], capture_output=True, text=True, timeout=120)


def test_template_passes_fun_validate():
    result = fun_validate(os.path.join(ROOT, "template.yml"))
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
    assert {"DINGTALK_TOKEN", "DINGTALK_AES_KEY", "DINGTALK_APP_KEY"} <= set(callback["EnvironmentVariables"])
    trigger = service["callback"]["Events"]["http-trigger"]
    assert trigger["Type"] == "HTTP"
    assert trigger["Properties"] == {"AuthType": "ANONYMOUS", "Methods": ["GET", "POST"]}
    worker = service["worker"]["Properties"]
    assert worker["Handler"] == "index.worker"
    assert worker["AsyncConfiguration"]["StatefulInvocation"] is True
    assert worker["AsyncConfiguration"]["MaxAsyncRetryAttempts"] >= 1
    assert "OnFailure" in worker["AsyncConfiguration"]["Destination"]
    domains = [r for r in resources.values() if r["Type"] == "Aliyun::Serverless::CustomDomain"]
    routes = domains[0]["Properties"]["RouteConfig"]["Routes"]
    assert list(routes.values()) == [{"ServiceName": "dingtalk-callback", "FunctionName": "callback"}]
    assert callback["CodeUri"] == worker["CodeUri"] == "./build/python3"


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


@pytest.fixture(scope="module", params=["python3", "python3.10", "python3.12"])
def package(request, tmp_path_factory):
    output = tmp_path_factory.mktemp("package") / request.param
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "package.py"),
            "--runtime",
            request.param,
            "--output",
            str(output),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return request.param, str(output)


def test_package_holds_the_function_and_nothing_else(package):
    runtime, path = package
    names = set(os.listdir(path))
    assert {"index.py", "handlers.py", "dingtalk_crypto.py", "dingtalk_fc", "Crypto", "redis"} <= names
    if runtime == "python3":  # Funcraft deploys to FC 2.0, whose API fc2 speaks
        assert {"fc2", "requests"} <= names
    else:  # FC 3.0: the hand-off needs only the standard library
        assert not names & {"fc2", "requests", "urllib3"}
    assert not names & {"tests", "tools", "dingtalk_fc_dev", "node_modules", "template.yml", "README.md"}
    assert not glob.glob(os.path.join(path, "**", "test_*.py"), recursive=False)
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
    output = str(tmp_path / "python3.10")
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "package.py"), "--runtime", "python3.10", "--output", output],
        check=True,
        capture_output=True,
        timeout=600,
    )
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
