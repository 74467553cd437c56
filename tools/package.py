"""Build the deployable code package for an FC runtime, without Docker.

    python tools/package.py --runtime python3       # Funcraft, Python 3.6 -> build/python3
    python tools/package.py --runtime python3.10    # Serverless Devs fc3  -> build/python3.10

Wheels come for the target Python and manylinux x86_64, whatever Python runs this script
(``fun build`` without Docker uses the host's pip and gets both wrong). Pure-Python projects
published only as source (aliyun-fc2) are first built into wheels here. The package holds the
deployed modules and their dependencies: no tests, no tools, no developer kit.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIMES = {"python3": "3.6", "python3.9": "3.9", "python3.10": "3.10", "python3.12": "3.12"}
PLATFORM = "manylinux2014_x86_64"
DEPLOYED_MODULES = ["index.py", "handlers.py", "dingtalk_crypto.py"]
DEPLOYED_PACKAGES = ["dingtalk_fc"]
# Pure-Python releases published only as source distributions.
SOURCE_ONLY = ["aliyun-fc2"]
# FC 2.0's API client: only Funcraft's python3 runtime needs it (FC 3.0's hand-off signs its
# requests with the standard library), so the other runtimes' packages leave it and its
# dependencies (requests, urllib3, ...) out.
FC2_ONLY = {"aliyun-fc2": ["python3"]}
# A complete, pinned list per runtime whose Python differs from the build host's markers.
LOCK_FILE = os.path.join(ROOT, "tools", "lock-{runtime}.txt")


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check", *args], check=True)


def requirement_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as source:
        lines = [line.split("#")[0].strip() for line in source]
    return [line for line in lines if line]


def name_of(requirement: str) -> str:
    return requirement.split("==")[0].strip().lower()


def find_interpreter(version: str) -> Optional[str]:
    """A working CPython of that version: pyenv's, or on PATH (pyenv shims are tried, not trusted)."""
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    candidates.append(shutil.which(f"python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def compile_bytecode(output: str, python_version: str) -> bool:
    """Ship bytecode: FC's code directory is read-only, so Python cannot cache what it compiles
    and would compile every module again at each cold start. Needs the target's interpreter."""
    python = find_interpreter(python_version)
    if python is None:
        print(f"note: no Python {python_version} here: the package ships sources only", file=sys.stderr)
        return False
    # 3.7+ can ignore source timestamps, which a zip round trip does not preserve exactly.
    mode = [] if python_version == "3.6" else ["--invalidation-mode", "unchecked-hash"]
    subprocess.run([python, "-m", "compileall", "-q", *mode, output], check=True)
    return True


def build(runtime: str, output: str) -> str:
    python_version = RUNTIMES[runtime]
    if os.path.exists(output):
        shutil.rmtree(output)
    os.makedirs(output)
    lock = LOCK_FILE.format(runtime=runtime)
    requirements = lock if os.path.exists(lock) else os.path.join(ROOT, "requirements.txt")
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as wheelhouse:
        wanted = [line for line in requirement_lines(requirements) if runtime in FC2_ONLY.get(name_of(line), [runtime])]
        pure = [line for line in wanted if name_of(line) in SOURCE_ONLY]
        if pure:
            pip("wheel", "--no-deps", "--wheel-dir", wheelhouse, *pure)
        install = [
            "install",
            "--target",
            output,
            "--platform",
            PLATFORM,
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            "--only-binary=:all:",
            "--find-links",
            wheelhouse,
            *wanted,
        ]
        if requirements == lock:
            install.append("--no-deps")
        pip(*install)
    if os.path.isdir(os.path.join(output, "bin")):  # console scripts are not needed at run time
        shutil.rmtree(os.path.join(output, "bin"))
    for module in DEPLOYED_MODULES:
        shutil.copy2(os.path.join(ROOT, module), output)
    for package in DEPLOYED_PACKAGES:
        shutil.copytree(
            os.path.join(ROOT, package),
            os.path.join(output, package),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    compile_bytecode(output, python_version)
    return output


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="python3")
    parser.add_argument("--output", help="default: build/<runtime>")
    args = parser.parse_args(argv)
    output = build(args.runtime, args.output or os.path.join(ROOT, "build", args.runtime))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(output) for f in files)
    print(f"{args.runtime} (Python {RUNTIMES[args.runtime]}): {output}, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
