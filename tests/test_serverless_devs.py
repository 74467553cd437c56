"""Serverless Devs' way: s.yaml rendered offline by the real `s preview` and checked against
the fc3 component's schema, for the callback, worker, recovery timer and dead-letter function."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT

FC3_SCHEMA = os.path.join(ROOT, "tests", "data", "fc3-props.schema.json")  # devsapp/fc3 props schema
S = os.path.join(ROOT, "node_modules", ".bin", "s")

# Dummy values: `s` writes the rendered file, secrets included, into $HOME/.s/logs.
DEPLOY_ENV = {
    "DINGTALK_TOKEN": "dummyDeployToken",
    "DINGTALK_AES_KEY": "dummy-aes-key-for-s-preview-0000000000000000",
    "DINGTALK_APP_KEY": "dingdummyappkey",
    "DINGTALK_DEDUP_REDIS_URL": "redis://:dummy-redis-password@r-your-instance.redis.rds.aliyuncs.com:6379/0",
    "DINGTALK_APP_SECRET": "dummy-app-secret",  # the recover function reads it
}
DUMMY_PEM = "-----BEGIN CERTIFICATE-----\nZHVtbXk=\n-----END CERTIFICATE-----\n"


def s_preview(path, home, environ=DEPLOY_ENV, certificates=True):
    """`s preview` of ``path`` next to placeholder certificates (certs/ is not in the repository)."""
    folder = os.path.dirname(path)
    if certificates:
        os.makedirs(os.path.join(folder, "certs"), exist_ok=True)
        for name in ("fullchain.pem", "privkey.pem"):
            with open(os.path.join(folder, "certs", name), "w") as out:
                out.write(DUMMY_PEM)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DINGTALK_")}, **environ, "HOME": str(home)}
    return subprocess.run(
        [S, "preview", "-t", path, "-o", "json"], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


def render_s_yaml(tmp_path, home, mutate=None, environ=DEPLOY_ENV):
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as source:
        text = source.read()
    copy = tmp_path / "s.yaml"
    copy.write_text(mutate(text) if mutate else text)
    result = s_preview(str(copy), home, environ)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout[result.stdout.index("{") :])


def without_vpc(text):
    """The variant without Redis: the in-memory store, no VPC."""
    start, end = text.index("      vpcConfig:"), text.index("      instanceLifecycleConfig:")
    return (text[:start] + text[end:]).replace("      vpcConfig: *vpcConfig\n", "")


@pytest.mark.parametrize("mutate", [None, without_vpc], ids=["as shipped: HTTPS, Redis in a VPC", "no VPC"])
def test_s_yaml_renders_offline_and_matches_the_fc3_schema(tmp_path, s_home, mutate):
    rendered = render_s_yaml(tmp_path, s_home, mutate)
    props = rendered["resources"]["callback"]["props"]
    assert rendered["resources"]["callback"]["component"] == "fc3"
    assert props["runtime"] == "python3.10"
    assert props["handler"] == "index.fc3_handler"
    assert props["code"] == "./build/run-make-package/python3.10.zip"
    assert props["instanceLifecycleConfig"]["initializer"]["handler"] == "index.initializer"
    worker = rendered["resources"]["worker"]["props"]
    callback_environment = {k: v for k, v in DEPLOY_ENV.items() if k != "DINGTALK_APP_SECRET"}
    environment = {
        **callback_environment,
        "DINGTALK_FC_VERSION": "3.0",
        "DINGTALK_WORKER_FUNCTION": worker["functionName"],
    }
    assert props["environmentVariables"] == environment  # secrets substituted from the environment
    assert props["triggers"][0]["triggerConfig"] == {"authType": "anonymous", "methods": ["GET", "HEAD", "POST"]}
    domain = props["customDomain"]
    assert domain["route"]["path"] == "/*"
    assert domain["protocol"] == "HTTP,HTTPS"
    assert domain["certConfig"]["certificate"] == domain["certConfig"]["privateKey"] == DUMMY_PEM
    assert set(props["logConfig"]) == {"project", "logstore"}
    assert props["role"] == worker["role"]  # the callback's STS credentials invoke the worker
    assert worker["handler"] == "index.worker"
    assert (worker["runtime"], worker["code"]) == (props["runtime"], props["code"])
    assert worker["environmentVariables"] == environment  # the worker decrypts the deferral
    assert worker["logConfig"] == props["logConfig"]
    async_config = worker["asyncInvokeConfig"]
    assert async_config["asyncTask"] is True  # needed for x-fc-async-task-id
    assert async_config["maxAsyncRetryAttempts"] >= 1
    assert async_config["maxAsyncEventAgeInSeconds"] >= 3600
    assert async_config["destinationConfig"]["onFailure"]["destination"].endswith("functions/dingtalk-dead-letter")
    for name in ("callback", "worker", "recover"):  # every function that reaches Redis
        assert ("vpcConfig" in rendered["resources"][name]["props"]) is (mutate is None)
    with open(FC3_SCHEMA, encoding="utf-8") as source:
        schema = json.load(source)
    for resource in rendered["resources"].values():
        jsonschema.validate(resource["props"], schema)


def test_s_writes_rendered_secrets_under_its_home(tmp_path, s_home):
    """What the README warns about: `s` logs the rendered values in clear text under ~/.s/logs
    (here the test's own HOME, removed with tmp_path)."""
    render_s_yaml(tmp_path, s_home)
    logs = [Path(d, f) for d, _, files in os.walk(s_home / ".s" / "logs") for f in files]
    assert logs
    assert any(DEPLOY_ENV["DINGTALK_TOKEN"] in log.read_text(errors="replace") for log in logs)


def test_s_preview_fails_on_a_broken_file(tmp_path, s_home):
    broken = tmp_path / "s.yaml"
    broken.write_text("edition: 3.0.0\nname: x\n  resources: [\n")
    assert s_preview(str(broken), s_home).returncode != 0


def test_fc3_schema_would_catch_a_wrong_runtime():
    with open(FC3_SCHEMA, encoding="utf-8") as source:
        schema = json.load(source)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "region": "cn-hangzhou",
                "functionName": "f",
                "runtime": "python3.11",
                "handler": "index.fc3_handler",
                "code": "./",
            },
            schema,
        )


def test_s_yaml_declares_recovery_and_dead_letter_for_fc3(tmp_path, s_home):
    resources = render_s_yaml(tmp_path, s_home)["resources"]
    recover, dead_letter = resources["recover"]["props"], resources["dead-letter"]["props"]
    assert recover["handler"] == "index.recover"
    assert recover["environmentVariables"]["DINGTALK_APP_SECRET"] == DEPLOY_ENV["DINGTALK_APP_SECRET"]
    assert recover["role"] == resources["callback"]["props"]["role"]  # it defers recovered events to the worker
    assert resources["worker"]["props"]["asyncInvokeConfig"]["destinationConfig"]["onFailure"]["destination"].endswith(
        "functions/" + dead_letter["functionName"]
    )
    assert recover["triggers"] == [
        {
            "triggerName": "every5minutes",
            "triggerType": "timer",
            "triggerConfig": {"cronExpression": "@every 5m", "enable": True, "payload": "recover"},
        }
    ]
    assert dead_letter["handler"] == "index.dead_letter"
    with open(FC3_SCHEMA, encoding="utf-8") as source:
        schema = json.load(source)
    for props in (recover, dead_letter):
        jsonschema.validate(props, schema)


def test_s_reads_the_untracked_dotenv_as_make_package_does(tmp_path, s_home):
    """The one-time setup is the same for both ways: `s` fills s.yaml from the `.env` next to it,
    and reads each value as tools/dotenv_settings.py does for the python3 package."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from dotenv_settings import parse

    dotenv = (
        "# the same file Funcraft and make package read\n"
        f"DINGTALK_TOKEN={DEPLOY_ENV['DINGTALK_TOKEN']}  # a comment\n"
        f"export DINGTALK_AES_KEY='{DEPLOY_ENV['DINGTALK_AES_KEY']}'\n"
        f"DINGTALK_APP_KEY = {DEPLOY_ENV['DINGTALK_APP_KEY']}\n"
        'DINGTALK_APP_SECRET="dummy app # secret"\n'
        f"DINGTALK_DEDUP_REDIS_URL={DEPLOY_ENV['DINGTALK_DEDUP_REDIS_URL']}\n"
    )
    (tmp_path / ".env").write_text(dotenv)
    rendered = render_s_yaml(tmp_path, s_home, environ={})
    recover = rendered["resources"]["recover"]["props"]["environmentVariables"]
    parsed = parse(dotenv)
    assert {name: recover[name] for name in parsed} == parsed
    assert parsed["DINGTALK_APP_SECRET"] == "dummy app # secret"


def test_s_preview_needs_the_certificate_files(tmp_path, s_home):
    """What docs/deploy.md warns about: without certs/, `s preview` stops naming the file."""
    copy = tmp_path / "s.yaml"
    copy.write_text((Path(ROOT) / "s.yaml").read_text())
    result = s_preview(str(copy), s_home, certificates=False)
    assert result.returncode != 0
    assert "file('./certs/fullchain.pem') not found" in result.stdout + result.stderr
