"""The docs stay true: the error table and the configuration tables match the code, the README's
commands exist, and every link between the README and docs/ lands on a file and a heading."""

import os
import re

from conftest import ROOT

from dingtalk_fc.errors import PROBLEMS


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as source:
        return source.read()


README = read("README.md")
DOCS = {name: read("docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")}


def test_error_table_matches_the_code():
    table = DOCS["errors.md"].split("<!-- errors:start")[1].split("<!-- errors:end -->")[0]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([^|]+) \|$", table, re.MULTILINE)
    documented = [(int(code), int(status), message.strip()) for code, status, message in rows]
    actual = sorted((p.errcode, p.status, p.errmsg) for p in PROBLEMS)
    assert documented == actual


def test_every_variable_the_code_reads_is_documented():
    read_by_code = set()
    for module in ("config.py",):  # the one loader, the callback's and recovery's
        read_by_code |= set(re.findall(r'"(DINGTALK_[A-Z_]+)"', read("dingtalk_fc", module)))
    documented = set(re.findall(r"`(DINGTALK_[A-Z_]+)`", DOCS["configuration.md"]))
    assert read_by_code == documented


def test_the_two_commands_exist():
    makefile = read("Makefile")
    assert "make run" in README
    assert "make test" in README
    assert re.search(r"^run:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)
    assert "make test" in read(".ci", "run")


def anchor(heading):
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_readme_and_the_docs_land():
    pages = {"README.md": README, **{"docs/" + name: text for name, text in DOCS.items()}}
    anchors = {page: {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)} for page, text in pages.items()}
    broken = []
    for page, text in pages.items():
        folder = os.path.dirname(page)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, fragment = target.partition("#")
            resolved = os.path.normpath(os.path.join(folder, path)) if path else page
            missing_page = not os.path.exists(os.path.join(ROOT, resolved))
            missing_heading = fragment and resolved in anchors and fragment not in anchors[resolved]
            if missing_page or missing_heading:
                broken.append(f"{page}: {target}")
    assert broken == []
