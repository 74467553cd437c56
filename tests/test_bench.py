"""`make bench` keeps working: one run with tiny counts (figures are not asserted here).

The instruction counts run the function under valgrind (about a minute on two cores): that run
is marked slow (`make test-slow`, and CI); the default one skips them.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize(
    "instruction_requests",
    [0, pytest.param(2, marks=pytest.mark.slow, id="under valgrind")],
    ids=lambda count: "no instruction counts" if count == 0 else None,
)
def test_bench_runs_and_writes_its_figures(tmp_path, instruction_requests):
    output = tmp_path / "bench.json"
    tiny = {"--repeat": 40, "--cold-runs": 1, "--memory-requests": 30, "--instruction-requests": instruction_requests}
    arguments = [str(part) for option in tiny.items() for part in option]
    bench = os.path.join(ROOT, "tools", "bench.py")
    result = subprocess.run(
        [sys.executable, bench, *arguments, "--json", str(output)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "warm check_url full request, median (us)" in result.stdout
    figures = json.loads(output.read_text())
    assert set(figures["warm"]) == {"check_url", "event_1kb"}
    assert figures["cold"]["first_reply_ms"] > 0
    assert figures["memory"]["requests"] == 30
    measured_fc3 = bool(figures["cold_fc3"])  # the python3.10 package via fc3_handler, where Python 3.10 exists
    assert set(figures["targets_met"]) == {"warm", "cold", "memory"} | ({"cold_fc3"} if measured_fc3 else set())
    if measured_fc3:
        assert figures["cold_fc3"]["first_reply_ms"] > 0
        assert figures["cold_fc3"]["floor_ms"] > 0
    if instruction_requests and shutil.which("valgrind"):
        assert figures["instructions"]["event_1kb"]["full"] > figures["instructions"]["check_url"]["full"] > 0
