"""`make typecheck` checks the deployed code's annotations, including the string and
``TYPE_CHECKING`` ones the Python 3.6 floor makes it write."""

import os
import subprocess
import sys

from conftest import ROOT


def mypy(folder):
    command = [sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "pyproject.toml"), str(folder)]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)


def test_mypy_would_catch_a_wrong_string_annotation(tmp_path):
    (tmp_path / "module.py").write_text(
        "TYPE_CHECKING = False\n"
        "if TYPE_CHECKING:\n"
        "    from typing import List\n\n\n"
        'def first(items: "List[str]") -> int:\n'
        "    return items[0]\n"
    )
    result = mypy(tmp_path)
    assert result.returncode == 1
    assert 'Incompatible return value type (got "str", expected "int")' in result.stdout
