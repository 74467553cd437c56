"""Funcraft's way: template.yml under the real `fun validate` and `fun build`, with the
callback, worker, recovery timer and dead-letter destination it declares."""

import json
import os
import shutil
import subprocess
import zipfile

import pytest
import yaml
from conftest import ROOT, TEST_ENV

from dingtalk_fc.config import load_settings

FUN = os.path.join(ROOT, "node_modules", ".bin", "fun")
SERVICE = "dingtalk-callback"
TEMPLATE = os.path.join(ROOT, "template.yml")


def load_template(path=TEMPLATE):
    with open(path, encoding="utf-8") as source:
        return yaml.safe_load(source)


def fun_validate(*paths):
    """The real `fun validate` of ``paths`` layered (each a `-t`), as `fun local` merges them."""
    env = {**os.environ, "FUN_DISABLE_VERSION_CHECK": "1"}
    command = [FUN, "validate"] + [arg for path in paths for arg in ("-t", path)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def without_vpc(template):
    """The variant without Redis: the in-memory store, no VPC."""
    service = template["Resources"]["dingtalk-callback"]
    del service["Properties"]["VpcConfig"]


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
    assert result.stdout + result.stderr == ""  # what success looks like (docs/deploy.md)


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
    assert "Parameters" not in load_template()  # plain `fun deploy` substitutes nothing
    secrets = ("DINGTALK_TOKEN", "DINGTALK_AES_KEY", "DINGTALK_APP_SECRET", "DINGTALK_DEDUP_REDIS_URL")
    for function in ("callback", "worker", "recover", "dead-letter"):
        variables = service[function]["Properties"].get("EnvironmentVariables", {})
        assert all(isinstance(value, str) for value in variables.values())  # fun refuses anything else
        assert not set(secrets) & set(variables)  # the package carries them, from the untracked .env
    assert service["Properties"]["Role"].startswith("acs:ram::")  # no RAM calls from `fun deploy`
    assert "Policies" not in service["Properties"]
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


def test_template_declares_the_recovery_timer_and_the_dead_letter_destination():
    service = load_template()["Resources"][SERVICE]
    recover = service["recover"]
    assert recover["Properties"]["Handler"] == "index.recover"
    assert recover["Properties"]["Runtime"] == "python3"
    assert recover["Properties"]["Timeout"] >= 240 + 20  # the default budget and its margin
    (trigger,) = recover["Events"].values()
    assert trigger["Type"] == "Timer"
    assert trigger["Properties"]["CronExpression"] == "@every 5m"
    assert trigger["Properties"]["Enable"] is True
    assert service["dead-letter"]["Properties"]["Handler"] == "index.dead_letter"
    destination = service["worker"]["Properties"]["AsyncConfiguration"]["Destination"]["OnFailure"]
    assert destination.startswith("acs:fc:::")  # Funcraft fills in the region and the account
    assert list(service).index("dead-letter") < list(service).index("worker")  # the destination exists first
    assert destination.endswith(f"services/{SERVICE}.LATEST/functions/dead-letter")


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda recover: recover["Events"]["every-5-minutes"]["Properties"].pop("CronExpression"), "CronExpression"),
        (lambda recover: recover["Events"]["every-5-minutes"].update(Type="Cron"), "Timer"),
    ],
    ids=["no cron expression", "not a Timer"],
)
def test_fun_validate_catches_a_broken_timer(tmp_path, mutate, complaint):
    template = load_template()
    mutate(template["Resources"][SERVICE]["recover"])
    broken = tmp_path / "template.yml"
    broken.write_text(yaml.safe_dump(template))
    result = fun_validate(str(broken))
    assert "template is not valid" in result.stdout + result.stderr
    assert complaint in result.stdout + result.stderr


def test_template_worker_timeout_is_below_the_lease():
    import yaml

    class AnyTag(yaml.SafeLoader):
        pass

    AnyTag.add_multi_constructor("!", lambda loader, suffix, node: None)  # ROS functions (!Ref ...)
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "template.yml")) as source:
        template = yaml.load(source, Loader=AnyTag)
    worker = template["Resources"]["dingtalk-callback"]["worker"]["Properties"]
    assert worker["Timeout"] < load_settings(TEST_ENV).dedup_in_flight_s


MERGE = """
const { getTpl } = require(process.argv[1]);
getTpl(...process.argv.slice(2)).then((tpl) => console.log(JSON.stringify(tpl)));
"""
LOCAL_OVERLAY = os.path.join(ROOT, "events", "fun-local.yml")


def test_fun_local_overlay_hands_the_container_strings_with_the_demo_keys():
    """`fun local start -t template.yml -t events/fun-local.yml`: merged by Funcraft's own code,
    every function variable is a string (never `[object Object]`), the callback and the worker
    get `make run`'s demo keys (the samples in events/ are signed with them), no Redis."""
    from dingtalk_fc_dev.demo import DEMO_ENVIRONMENT

    assert fun_validate(TEMPLATE, LOCAL_OVERLAY).returncode == 0
    tpl = os.path.join(ROOT, "node_modules", "@alicloud", "fun", "lib", "tpl.js")
    merged = subprocess.run(
        ["node", "-e", MERGE, tpl, TEMPLATE, LOCAL_OVERLAY], capture_output=True, text=True, check=True, timeout=60
    )
    service = json.loads(merged.stdout)["Resources"][SERVICE]
    for name in ("callback", "worker", "recover", "dead-letter"):
        environment = service[name]["Properties"].get("EnvironmentVariables", {})
        assert all(isinstance(value, str) for value in environment.values())
    for name in ("callback", "worker"):
        environment = service[name]["Properties"]["EnvironmentVariables"]
        assert {k: environment[k] for k in DEMO_ENVIRONMENT} == DEMO_ENVIRONMENT
        assert environment["DINGTALK_DEDUP_REDIS_URL"] == ""  # set, so the package's Redis URL does not apply
        assert (
            environment["DINGTALK_WORKER_FUNCTION"]
            == load_template()["Resources"][SERVICE][name]["Properties"]["EnvironmentVariables"][
                "DINGTALK_WORKER_FUNCTION"
            ]
        )
    assert service["callback"]["Properties"]["Handler"] == "index.handler"  # a layer, not a replacement
