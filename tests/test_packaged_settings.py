"""The python3 package's settings: read from `.env` by `make package` (tools/package.py), applied
by the deployed index.py under the variables set on the function."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import APP_SECRET, REDIS_PASSWORD, ROOT, TEST_ENV

PACKAGE = os.path.join(ROOT, "tools", "package.py")
PRODUCT_HANDLERS = "from dingtalk_fc import Router\n\nrouter = Router()\n"


def package(root, *, runtime="python3"):
    archive = root / f"{runtime}.zip"
    result = subprocess.run(
        [sys.executable, PACKAGE, "--runtime", runtime, "--root", str(root), "--output", str(archive)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout + result.stderr)  # the leak scan reads it
    return result, archive


def project_with(tmp_path, dotenv):
    tmp_path.mkdir(exist_ok=True)
    for name in ("requirements.txt", "index.py", "dingtalk_crypto.py"):
        shutil.copy2(os.path.join(ROOT, name), tmp_path / name)
    (tmp_path / "handlers.py").write_text(PRODUCT_HANDLERS)  # never the team's: it may import its own modules
    shutil.copytree(
        os.path.join(ROOT, "dingtalk_fc"), tmp_path / "dingtalk_fc", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "tools").mkdir()
    shutil.copy2(os.path.join(ROOT, "tools", "lock-python3.txt"), tmp_path / "tools")
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    return tmp_path


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (f"DINGTALK_AES_KEY=short{REDIS_PASSWORD}", "error: .env: DINGTALK_AES_KEY is invalid"),
        (f"a line without an equals sign {REDIS_PASSWORD}", "error: .env line 4 is not NAME=value"),
    ],
    ids=["an invalid aes_key", "not NAME=value"],
)
def test_make_package_refuses_a_bad_dotenv_in_one_line_naming_it_never_the_value(tmp_path, line, complaint):
    keys = "".join(f"{k}={v}\n" for k, v in TEST_ENV.items())
    result, archive = package(project_with(tmp_path, keys + line + "\n"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(complaint)
    assert REDIS_PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not archive.exists()


def run_index(code, environ):
    """Import the package's index.py in a fresh interpreter; print the DINGTALK_* it sees."""
    probe = "import json, os, index; print(json.dumps({k: v for k, v in os.environ.items() if k[:9] == 'DINGTALK_'}))"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(code), **environ}
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=code, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_package_applies_its_settings_under_the_functions_own_variables(tmp_path):
    dotenv = (
        "".join(f"{k}={v}\n" for k, v in TEST_ENV.items()) + f"DINGTALK_APP_SECRET={APP_SECRET}\nREGION=cn-beijing\n"
    )
    result, archive = package(project_with(tmp_path / "project", dotenv))
    assert result.returncode == 0, result.stderr
    assert "DINGTALK_APP_SECRET" in result.stderr
    assert APP_SECRET not in result.stdout + result.stderr
    code = tmp_path / "code"
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(code)
        assert json.loads(bundle.read("packaged_settings.json")) == {**TEST_ENV, "DINGTALK_APP_SECRET": APP_SECRET}
    assert run_index(code, {}) == {**TEST_ENV, "DINGTALK_APP_SECRET": APP_SECRET}
    assert run_index(code, {"DINGTALK_APP_KEY": "dingsetonthefunction"})["DINGTALK_APP_KEY"] == "dingsetonthefunction"


@pytest.mark.parametrize(
    ("dotenv", "note"),
    [
        (None, "note: no .env"),
        ("ACCESS_KEY_ID=LTAI5tOnly\nREGION=cn-hangzhou\n", "note: .env holds no function settings"),
    ],
    ids=["no .env", "only Funcraft's credentials"],
)
def test_without_settings_in_dotenv_the_package_carries_none_and_says_so(tmp_path, dotenv, note):
    result, archive = package(project_with(tmp_path / "project", dotenv))
    assert result.returncode == 0, result.stderr
    assert note in result.stderr
    with zipfile.ZipFile(archive) as bundle:
        assert "packaged_settings.json" not in bundle.namelist()
        bundle.extractall(tmp_path / "code")
    assert run_index(tmp_path / "code", {"DINGTALK_TOKEN": "x"}) == {"DINGTALK_TOKEN": "x"}


def test_the_python310_package_carries_no_settings_s_yaml_passes_them(tmp_path):
    dotenv = "".join(f"{k}={v}\n" for k, v in TEST_ENV.items())
    result, archive = package(project_with(tmp_path, dotenv), runtime="python3.10")
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(archive) as bundle:
        assert "packaged_settings.json" not in bundle.namelist()
