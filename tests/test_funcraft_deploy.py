"""docs/deploy.md's Funcraft steps, as a user types them, on a fresh copy of the project: the
one-time setup (``.env``, ``certs/``), then ``make package && fun build && fun deploy``, with
the project's own ``fun`` against tests/stubs/fc2_deploy_api.py inside a loopback-only network
namespace; then the uploaded callback run as FC's python3 runtime runs it (real Python 3.6,
only the zip on the path, the deployed environment), and a redeploy after editing a handler."""

import base64
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile

import pytest
import yaml
from conftest import APP_SECRET, DEPLOY_KEY_SECRET, LEAK_MARKERS, REDIS_PASSWORD, ROOT, TEST_ENV, TESTS, RedisServer
from Crypto.Cipher import AES

sys.path.insert(0, os.path.join(TESTS, "..", "tools"))
from package import find_interpreter
from stubs.fc2_deploy_api import FcDeployApi

ACCOUNT_ID, REGION = "1234567890123456", "cn-hangzhou"
DEPLOY_KEY_ID = "LTAI5tDeployKeyForTests"
SERVICE = "dingtalk-callback"
PEM = "-----BEGIN CERTIFICATE-----\nZHVtbXktY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nZHVtbXkta2V5\n-----END PRIVATE KEY-----\n"
FUN = "node_modules/.bin/fun"
# FC_ENDPOINT comes from the namespace runner: nothing else in the namespace answers.
DEPLOY = ["sh", "-c", f"{FUN} build && {FUN} deploy -y"]
NETNS_RUNNER = os.path.join(TESTS, "support", "fc_deploy_netns.py")
RUNTIME = os.path.join(TESTS, "support", "fc2_python3_runtime.py")
FUNCRAFT_VARIABLES = {"LD_LIBRARY_PATH", "PATH", "NODE_PATH", "PYTHONUSERBASE"}  # fun adds them
# A team's handlers.py (the product's tests never depend on the shipped one), reading its own setting.
TEAM_HANDLERS = """import os

from dingtalk_fc import Router

router = Router()


@router.on("user_add_org")
def user_added(event):
    return {"erp_url": os.environ["ERP_URL"]}
"""


def dotenv(redis_url):
    """The one-time setup's ``.env``: Funcraft's credentials, the function's settings, a team's own."""
    return (
        "# Funcraft reads its credentials here; they stay out of the package\n"
        f"ACCOUNT_ID={ACCOUNT_ID}\nREGION={REGION}\n"
        f"ACCESS_KEY_ID={DEPLOY_KEY_ID}\nACCESS_KEY_SECRET={DEPLOY_KEY_SECRET}\n"
        "# The function's settings\n"
        f"DINGTALK_TOKEN={TEST_ENV['DINGTALK_TOKEN']}\n"
        f"DINGTALK_AES_KEY='{TEST_ENV['DINGTALK_AES_KEY']}'\n"
        f"DINGTALK_APP_KEY={TEST_ENV['DINGTALK_APP_KEY']}  # the AppKey\n"
        f'DINGTALK_APP_SECRET="{APP_SECRET}"\n'
        f"DINGTALK_DEDUP_REDIS_URL={redis_url}\n"
        "export ERP_URL=https://erp.example.com/api\n"
    )


def function_settings(redis_url):
    return {
        **TEST_ENV,
        "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_DEDUP_REDIS_URL": redis_url,
        "ERP_URL": "https://erp.example.com/api",
    }


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None


# What a clone never holds, for a project that is no git checkout (the team-project proof's copy).
NOT_CLONED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "build",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    ".fun",
    ".s",
    ".env",
    "certs",
    "template.packaged.yml",
)


def fresh_copy(target):
    """What `git clone` gives: the tracked and untracked-but-not-ignored files, no build, no .env."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
    )
    if listed.returncode != 0:  # not a checkout: the same files, by the patterns .gitignore names
        shutil.copytree(ROOT, target, ignore=NOT_CLONED, dirs_exist_ok=True)
        os.symlink(os.path.join(ROOT, "node_modules"), os.path.join(target, "node_modules"))
        return target
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = os.path.join(ROOT, name)
        if name.startswith("node_modules") or not os.path.isfile(source):
            continue
        os.makedirs(os.path.join(target, os.path.dirname(name)), exist_ok=True)
        shutil.copy2(source, os.path.join(target, name))
    os.symlink(os.path.join(ROOT, "node_modules"), os.path.join(target, "node_modules"))
    return target


class Project:
    """The copy, and the user's commands in it with a fresh HOME and no inherited settings."""

    def __init__(self, folder, home, state):
        self.folder, self.state = folder, state
        self.cloned = {str(p.relative_to(folder)): digest(p) for p in folder.rglob("*") if digest(p)}
        self.env = {"PATH": os.environ["PATH"], "HOME": str(home), "FUN_DISABLE_VERSION_CHECK": "1", "LANG": "C.UTF-8"}
        self.outputs = []

    def run(self, command, netns=False):
        if netns:  # fun next to the FC stub, in a namespace where only loopback exists
            command = ["unshare", "-rn", sys.executable, NETNS_RUNNER, str(self.state), *command]
        result = subprocess.run(command, cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        self.outputs.append(output)
        print(output)  # the suite's leak scan reads it
        return result.returncode, output

    def make_package(self):
        """`make package`, with this suite's virtualenv rather than a new one in the copy."""
        venv = os.path.dirname(os.path.dirname(sys.executable))  # the suite's own, wherever it runs
        return self.run(["make", "-o", os.path.join(venv, ".installed"), "package", f"VENV={venv}"])


def deployed_requests(log, start=0):
    return [entry for entry in log[start:] if entry["method"] in ("POST", "PUT")]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """The documented steps twice: the first deploy, then a redeploy after editing a handler
    (with a leftover template.packaged.yml and a bare `fun deploy` on the way)."""
    base = tmp_path_factory.mktemp("fun-deploy")
    home, state = base / "home", base / "fc"
    home.mkdir()
    state.mkdir()
    (state / "account.json").write_text(
        json.dumps({"account_id": ACCOUNT_ID, "region": REGION, "credentials": {DEPLOY_KEY_ID: DEPLOY_KEY_SECRET}})
    )
    redis = RedisServer(password=REDIS_PASSWORD)
    redis.start()
    project = Project(fresh_copy(base / "project"), home, state)
    folder = project.folder
    started = time.monotonic()
    (folder / "handlers.py").write_text(TEAM_HANDLERS)
    # The one-time setup
    (folder / ".env").write_text(dotenv(redis.url))
    (folder / "certs").mkdir()
    (folder / "certs" / "fullchain.pem").write_text(PEM)
    (folder / "certs" / "privkey.pem").write_text(KEY_PEM)
    first = [project.make_package(), project.run(DEPLOY, netns=True)]
    first_log_length = len(FcDeployApi.load(state)["log"])
    first_zip = (folder / "build" / "run-make-package" / "python3.zip").read_bytes()
    # Edit a handler; a leftover of the ROS path that would deploy other values
    marker = "REDEPLOYED_" + os.urandom(6).hex()
    with open(folder / "handlers.py", "a", encoding="utf-8") as handlers:
        handlers.write(f"\n{marker} = True  # edited after the first deploy\n")
    template = yaml.safe_load((folder / "template.yml").read_text())
    template["Resources"][SERVICE]["callback"]["Properties"]["MemorySize"] = 3072
    (folder / "template.packaged.yml").write_text(yaml.safe_dump(template))
    package = project.make_package()
    bare = project.run([FUN, "deploy", "-y"], netns=True)  # forgot `fun build`: refused
    second = [package, project.run(DEPLOY, netns=True)]
    yield {
        "project": project,
        "redis": redis,
        "first": first,
        "second": second,
        "bare": bare,
        "state": FcDeployApi.load(state),
        "first_log_length": first_log_length,
        "first_zip": first_zip,
        "marker": marker,
        "template": yaml.safe_load((folder / "template.yml").read_text()),
        "seconds": time.monotonic() - started,
    }
    redis.stop()
    shutil.rmtree(redis.directory, ignore_errors=True)


def first_deploy(deployment):
    return deployed_requests(deployment["state"]["log"][: deployment["first_log_length"]])


def test_the_documented_steps_deploy_and_redeploy(deployment):
    for code, output in deployment["first"] + deployment["second"]:
        assert code == 0, output
    print(f"two packages and three fun runs: {deployment['seconds']:.1f} s")
    uploads = [e for e in deployment["state"]["log"] if e["method"] in ("POST", "PUT") and "code" in e]
    assert len(uploads) == 8  # four functions, twice
    assert all(e["chunked"] for e in uploads)  # fun streams function bodies, as FC accepts them


def test_fun_deploy_creates_what_the_template_declares(deployment):
    state, template = deployment["state"], deployment["template"]["Resources"]
    declared = template[SERVICE]
    service = state["services"][SERVICE]
    assert service["role"] == declared["Properties"]["Role"]  # so fun makes FC calls only, no RAM
    assert service["logConfig"]["project"] == declared["Properties"]["LogConfig"]["Project"]
    assert service["logConfig"]["logstore"] == declared["Properties"]["LogConfig"]["Logstore"]
    assert service["vpcConfig"]["VpcId"] == declared["Properties"]["VpcConfig"]["VpcId"]
    functions = {k: v for k, v in declared.items() if k not in ("Type", "Properties")}
    assert set(functions) == {"callback", "worker", "recover", "dead-letter"}
    for name, function in functions.items():
        properties, deployed = function["Properties"], state["functions"][f"{SERVICE}/{name}"]
        assert deployed["handler"] == properties["Handler"]
        assert deployed["runtime"] == properties["Runtime"] == "python3"
        assert deployed["initializer"] == properties.get("Initializer", "")
        assert (deployed["timeout"], deployed["memorySize"]) == (properties["Timeout"], properties["MemorySize"])
        environment = deployed["environmentVariables"]
        assert all(isinstance(value, str) for value in environment.values())
        assert {k: v for k, v in environment.items() if k not in FUNCRAFT_VARIABLES} == properties.get(
            "EnvironmentVariables", {}
        )
    http = state["triggers"][f"{SERVICE}/callback/http-trigger"]
    assert http["triggerType"] == "http"
    assert http["triggerConfig"] == {"authType": "anonymous", "methods": ["GET", "HEAD", "POST"]}
    timer = state["triggers"][f"{SERVICE}/recover/every-5-minutes"]
    assert (timer["triggerType"], timer["triggerConfig"]["cronExpression"]) == ("timer", "@every 5m")
    declared_async = functions["worker"]["Properties"]["AsyncConfiguration"]
    async_config = state["async_configs"][f"{SERVICE}/worker@LATEST"]
    assert async_config["statefulInvocation"] is declared_async["StatefulInvocation"] is True
    assert async_config["maxAsyncRetryAttempts"] == declared_async["MaxAsyncRetryAttempts"]
    assert async_config["destinationConfig"]["onFailure"]["destination"] == (
        f"acs:fc:{REGION}:{ACCOUNT_ID}:services/{SERVICE}.LATEST/functions/dead-letter"  # filled in by fun
    )
    (domain_name,) = [k for k, v in template.items() if v["Type"] == "Aliyun::Serverless::CustomDomain"]
    domain = state["domains"][domain_name]
    assert domain["protocol"] == "HTTP,HTTPS"
    assert domain["routeConfig"]["routes"] == [{"serviceName": SERVICE, "functionName": "callback", "path": "/*"}]
    assert (domain["certConfig"]["Certificate"], domain["certConfig"]["PrivateKey"]) == (PEM, KEY_PEM)
    created = [entry["path"] for entry in first_deploy(deployment)]
    assert all(
        entry["method"] == "POST" or "async-invoke-config" in entry["path"] for entry in first_deploy(deployment)
    )
    assert len(created) == 1 + 4 + 2 + 1 + 1  # service, functions, triggers, async config, domain


def uploaded_zip(state, function):
    with open(state["functions"][f"{SERVICE}/{function}"]["zip"], "rb") as source:
        return source.read()


def test_the_package_carries_the_settings_from_dotenv_and_nothing_else(deployment):
    """Every function runs the zip `make package` built, whose settings are `.env`'s, as strings,
    without Funcraft's credentials."""
    state, folder = deployment["state"], deployment["project"].folder
    built = (folder / "build" / "run-make-package" / "python3.zip").read_bytes()
    for function in ("callback", "worker", "recover", "dead-letter"):
        assert hashlib.sha256(uploaded_zip(state, function)).digest() == hashlib.sha256(built).digest()
    with zipfile.ZipFile(io.BytesIO(built)) as bundle:
        settings = json.loads(bundle.read("packaged_settings.json"))
    assert settings == function_settings(deployment["redis"].url)


def dingtalk_encrypt(message, app_key, aes_key):
    """DingTalk's side, written from its documentation: AES-256-CBC, IV = key[:16], PKCS#7 to 32."""
    key = base64.b64decode(aes_key + "=")
    text = message.encode()
    raw = os.urandom(16) + struct.pack(">I", len(text)) + text + app_key.encode()
    padding = 32 - len(raw) % 32
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(raw + bytes([padding]) * padding)).decode()


def dingtalk_decrypt(encrypted, app_key, aes_key):
    key = base64.b64decode(aes_key + "=")
    raw = AES.new(key, AES.MODE_CBC, key[:16]).decrypt(base64.b64decode(encrypted))
    raw = raw[: -raw[-1]]
    (length,) = struct.unpack(">I", raw[16:20])
    assert raw[20 + length :].decode() == app_key  # the reply is for this app
    return raw[20 : 20 + length].decode()


def dingtalk_signature(token, timestamp, nonce, encrypted):
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


def dingtalk_request(plaintext):
    token, aes_key, app_key = TEST_ENV["DINGTALK_TOKEN"], TEST_ENV["DINGTALK_AES_KEY"], TEST_ENV["DINGTALK_APP_KEY"]
    encrypted = dingtalk_encrypt(plaintext, app_key, aes_key)
    timestamp, nonce = str(int(time.time() * 1000)), os.urandom(4).hex()
    query = (
        f"msg_signature={dingtalk_signature(token, timestamp, nonce, encrypted)}&timestamp={timestamp}&nonce={nonce}"
    )
    return {"method": "POST", "query": query, "body": json.dumps({"encrypt": encrypted})}


def dingtalk_accepts(reply):
    """What DingTalk checks of a reply: its signature, and `success` for this app inside."""
    token, aes_key, app_key = TEST_ENV["DINGTALK_TOKEN"], TEST_ENV["DINGTALK_AES_KEY"], TEST_ENV["DINGTALK_APP_KEY"]
    answer = json.loads(reply["body"])
    signature = dingtalk_signature(token, answer["timeStamp"], answer["nonce"], answer["encrypt"])
    return (
        reply["status"].startswith("200")
        and answer["msg_signature"] == signature
        and dingtalk_decrypt(answer["encrypt"], app_key, aes_key) == "success"
    )


def test_the_uploaded_callback_runs_on_python36_as_deployed(deployment, tmp_path):
    python36 = find_interpreter("3.6")
    assert python36, "Python 3.6 is needed (pyenv install 3.6.15)"
    state = deployment["state"]
    code = tmp_path / "code"
    with zipfile.ZipFile(io.BytesIO(uploaded_zip(state, "callback"))) as bundle:
        bundle.extractall(code)
    event = json.dumps({"EventType": "user_add_org", "eventId": "deploy-" + os.urandom(4).hex(), "UserId": ["u1"]})
    deliveries = [dingtalk_request(json.dumps({"EventType": "check_url"})), dingtalk_request(event)]
    deliveries.append(dingtalk_request(event))  # DingTalk's retry of the same event
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(d) + "\n" for d in deliveries))
    environment = state["functions"][f"{SERVICE}/callback"]["environmentVariables"]
    result = subprocess.run(
        [python36, "-S", RUNTIME, str(tmp_path / "requests.jsonl"), str(tmp_path / "replies.jsonl")],
        cwd=code,
        env=environment,  # exactly what was deployed, nothing of this process
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    replies = [json.loads(line) for line in (tmp_path / "replies.jsonl").read_text().splitlines()]
    assert len(replies) == 3
    assert all(dingtalk_accepts(reply) for reply in replies)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len(deliveries)  # one record per delivery
    assert [r["event_type"] for r in records] == ["check_url", "user_add_org", "user_add_org"]
    assert records[1]["erp_url"] == function_settings(deployment["redis"].url)["ERP_URL"]  # a team's own setting
    assert records[2]["outcome"] == "duplicate"  # seen in Redis, reached with .env's password

    import redis

    assert redis.Redis.from_url(deployment["redis"].url).dbsize() >= 1


def test_no_secret_in_a_tracked_file_nor_in_funs_output(deployment):
    """`git add -A` in the project after the documented steps stages no key; fun never printed one."""
    folder = deployment["project"].folder
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    staged = subprocess.run(["git", "ls-files", "-z"], cwd=folder, capture_output=True, check=True).stdout.decode()
    names = [n for n in staged.split("\0") if n]
    assert "template.yml" in names
    assert ".env" not in names
    assert not [n for n in names if n.startswith(("build/", ".fun/", "certs/"))]
    secrets = [*LEAK_MARKERS[:2], APP_SECRET, REDIS_PASSWORD, DEPLOY_KEY_SECRET]
    cloned = deployment["project"].cloned  # the suite's own sources hold these test values
    for name in names:
        path = folder / name
        if path.is_file() and not path.is_symlink() and cloned.get(name) != digest(path):
            text = path.read_bytes().decode(errors="replace")
            assert not [s for s in secrets if s in text], name
    assert "handlers.py" in [n for n in names if cloned.get(n) != digest(folder / n)]  # the edit is seen
    for output in deployment["project"].outputs:
        assert not [s for s in secrets if s in output]


def test_a_redeploy_ships_the_edited_handler_and_nothing_stale_wins(deployment):
    state = deployment["state"]
    code, output = deployment["bare"]
    assert code != 0
    assert "fun build" in output
    assert not (deployment["project"].folder / "template.packaged.yml").exists()  # make package removed it
    updates = deployed_requests(state["log"], deployment["first_log_length"])
    assert updates
    assert all(entry["method"] == "PUT" for entry in updates)
    assert {
        e["path"].rsplit("/", 1)[-1] for e in updates if "/functions/" in e["path"] and e["path"].count("/") == 5
    } == {
        "callback",
        "worker",
        "recover",
        "dead-letter",
    }
    callback = uploaded_zip(state, "callback")
    assert callback != deployment["first_zip"]
    with zipfile.ZipFile(io.BytesIO(callback)) as bundle:
        assert deployment["marker"] in bundle.read("handlers.py").decode()
    declared = deployment["template"]["Resources"][SERVICE]["callback"]["Properties"]
    assert state["functions"][f"{SERVICE}/callback"]["memorySize"] == declared["MemorySize"]  # not the leftover's
