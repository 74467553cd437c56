"""The README stays true: its error table, configuration table and commands match the code."""

import os
import re

from conftest import ROOT

from dingtalk_fc.errors import PROBLEMS

with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as _source:
    README = _source.read()


def test_error_table_matches_the_code():
    table = README.split("<!-- errors:start")[1].split("<!-- errors:end -->")[0]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([^|]+) \|$", table, re.MULTILINE)
    documented = [(int(code), int(status), message.strip()) for code, status, message in rows]
    actual = sorted((p.errcode, p.status, p.errmsg) for p in PROBLEMS)
    assert documented == actual


def test_every_variable_the_code_reads_is_documented():
    read = set()
    for module in ("config.py", "recovery.py"):
        with open(os.path.join(ROOT, "dingtalk_fc", module), encoding="utf-8") as source:
            read |= set(re.findall(r'"(DINGTALK_[A-Z_]+)"', source.read()))
    table = README.split("## Configuration")[1].split("## What lands")[0]
    documented = set(re.findall(r"`(DINGTALK_[A-Z_]+)`", table))
    assert read == documented


def test_the_two_commands_exist():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as source:
        makefile = source.read()
    assert "make run" in README
    assert "make test" in README
    assert re.search(r"^run:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as source:
        assert "make test" in source.read()
