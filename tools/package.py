"""Build the deployable code package for an FC runtime, without Docker: one zip per runtime.

    python tools/package.py --runtime python3       # Funcraft, Python 3.6 -> build/run-make-package/python3.zip
    python tools/package.py --runtime python3.10    # fc3, Python 3.10 -> build/run-make-package/python3.10.zip
    python tools/package.py --refresh-lock          # rewrite tools/lock-python3.txt with Python 3.6.15
    python tools/package.py --list-own              # the project's own modules the package ships

What is shipped: every top-level module (``*.py``) and package (a folder with ``__init__.py``)
of the repository except those in ``EXCLUDED`` below (the developer kit, tests and tools), so a
team's own modules go along without a list to maintain; and the dependencies of
``requirements.txt`` for the target Python. Wheels come for the target Python and manylinux
x86_64, whatever Python runs this script (``fun build`` without Docker uses the host's pip and
gets both wrong). For Python 3.6 the complete pinned list ``tools/lock-python3.txt`` is installed
with ``--no-deps`` (pip evaluates dependency markers for its own Python, not the target's), after
checking that it pins every requirement exactly as ``requirements.txt`` does. Bytecode is
compiled by the target's interpreter when this machine has one (FC's code directory is
read-only: without it every cold start compiles); dependencies' test folders, pycryptodome's
``SelfTest`` and the build machine's bytecode are left out.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIMES = {"python3": "3.6", "python3.9": "3.9", "python3.10": "3.10", "python3.12": "3.12"}
# The exact Python of FC's python3 runtime, as Aliyun's fc-docker image of it builds it
# (python3.6/base/Dockerfile: PYTHON_VERSION 3.6.15). pip reads `--python-version 3.6` as 3.6.0
# and refuses releases that need 3.6.1 or later (pyparsing 3.1 needs 3.6.8): the lock and the
# package both target this one, and `make lock` resolves under an interpreter of this version.
TARGET_PYTHON = {"python3": "3.6.15"}
PLATFORM = "manylinux2014_x86_64"
# Top-level names of the repository that are never deployed; everything else that Python can
# import (modules and packages) is.
EXCLUDED = {"dingtalk_fc_dev", "tests", "handler_tests", "tools", "build", "node_modules", "conftest.py", "setup.py"}
# Inside dependencies: test suites and pycryptodome's self-test (4.9 MB), never imported at run time.
PRUNED_DIRECTORIES = {"tests", "test", "SelfTest", "__pycache__", "bin"}
# pip's own bookkeeping in each dist-info (the file list for uninstalling, the installer's name):
# nothing reads it at run time; about 35 KB of the python3 zip. METADATA (read by
# importlib.metadata) and the licences stay.
PRUNED_DIST_INFO_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
# Pure-Python releases published only as source distributions.
SOURCE_ONLY = ["aliyun-fc2"]
# FC 2.0's API client: only Funcraft's python3 runtime defers through it (FC 3.0's deferral
# signs its requests with the standard library), so the other runtimes' packages leave it and
# its dependencies (requests, urllib3, ...) out.
RUNTIME_ONLY = {"aliyun-fc2": {"python3"}}
# template.yml and s.yaml point here: on a clean clone, `fun build` / `fun deploy` / `s deploy`
# then fail with "CodeUri .../build/run-make-package/python3.zip is not exist", naming the fix.
OUTPUT_DIR = os.path.join("build", "run-make-package")
LOCKED_RUNTIME = "python3"
LOCK_FILE = os.path.join("tools", "lock-python3.txt")
# Optional, per runtime: requirements-python3.10.txt adds to requirements.txt, or re-pins its lines
# by name, for that runtime's package only (a team on FC 3.0 alone is not held to 3.6 releases).
RUNTIME_REQUIREMENTS = "requirements-{runtime}.txt"
REFRESH_COMMAND = "make lock"
LOCK_HEADER = """\
# FC's python3 runtime is Python 3.6. pip cannot evaluate environment markers for another
# Python (it uses its own), so the python3 package is installed from this complete list with
# --no-deps. Generated from requirements.txt by `make lock` (pip under a real Python 3.6);
# `make package` fails when a requirement is missing here or pinned differently.
# Lines marked "override" are kept by `make lock` and win over what the resolver would pick.
"""
OVERRIDE_MARK = "# override:"


class PackageError(Exception):
    """A package cannot be built as asked; the message says why and what to run."""


def pip(*args: str, python: str = sys.executable) -> None:
    subprocess.run([python, "-m", "pip", "--quiet", "--disable-pip-version-check", *args], check=True)


def requirement_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as source:
        lines = [line.split("#")[0].strip() for line in source]
    return [line for line in lines if line]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return canonical(re.split(r"[<>=!~\[ ;]", line.strip())[0])


def pins(lines: List[str]) -> Dict[str, Optional[str]]:
    """``{canonical name: version or None}`` of ``name==version`` (or unpinned) requirement lines."""
    result = {}  # type: Dict[str, Optional[str]]
    for line in lines:
        _name, _, version = re.split(r"\s*;", line)[0].partition("==")
        result[requirement_name(line)] = version.strip() or None
    return result


def check_lock(root: str) -> str:
    """The lock file's path, once it pins every requirement as ``requirements.txt`` does."""
    lock = os.path.join(root, LOCK_FILE)
    wanted = pins(requirement_lines(os.path.join(root, "requirements.txt")))
    locked = pins(requirement_lines(lock)) if os.path.exists(lock) else {}
    problems = []
    for name, version in wanted.items():
        if name not in locked:
            problems.append(f"{name} is in requirements.txt but missing from {LOCK_FILE}")
        elif version is not None and locked[name] != version:
            problems.append(f"{name} is pinned {version} in requirements.txt but {locked[name]} in {LOCK_FILE}")
    if problems:
        raise PackageError("; ".join(problems) + f": refresh the lock with `{REFRESH_COMMAND}`")
    return lock


def own_modules(root: str) -> List[str]:
    """The repository's top-level modules and packages that the package ships, sorted."""
    names = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name in EXCLUDED or name.startswith((".", "_", "test_")):
            continue
        is_module = name.endswith(".py") and os.path.isfile(path)
        is_package = name.isidentifier() and os.path.isfile(os.path.join(path, "__init__.py"))
        if is_module or is_package:
            names.append(name)
    return names


def find_interpreter(version: str) -> Optional[str]:
    """A working CPython of that version: pyenv's, or on PATH (pyenv shims are tried, not trusted)."""
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    candidates.append(shutil.which(f"python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def prune(output: str) -> None:
    """Drop what never runs on FC (dependencies' tests, bytecode of the build machine's Python,
    type stubs) and the debug information of compiled modules (pycryptodome ships it: half the
    size of its ``.so`` files), which FC would download at every cold start."""
    strip = shutil.which("strip")
    if strip is None:
        print("note: no `strip` here (binutils): compiled modules keep their debug information", file=sys.stderr)
    for directory, subdirectories, files in os.walk(output):
        for name in [n for n in subdirectories if n in PRUNED_DIRECTORIES]:
            shutil.rmtree(os.path.join(directory, name))
            subdirectories.remove(name)
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith(".pyi") or (directory.endswith(".dist-info") and name in PRUNED_DIST_INFO_FILES):
                os.remove(path)
            elif name.endswith(".so") and strip is not None:
                subprocess.run([strip, "--strip-debug", path], check=True)


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


def install_dependencies(
    requirements: List[str], output: str, python_version: str, locked: bool, constraints: List[str]
) -> None:
    """pip for the target, not this machine: ``--no-deps`` from the lock, or resolved with the
    lock's pins as constraints so both zips ship the same release wherever one serves both."""
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as wheelhouse:
        pure = [line for line in requirements if requirement_name(line) in SOURCE_ONLY]
        if pure:
            pip("wheel", "--no-deps", "--wheel-dir", wheelhouse, *pure)
        install = ["install", "--target", output, "--no-compile", "--platform", PLATFORM]
        install += ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]
        install += ["--find-links", wheelhouse, *requirements]
        if locked:
            pip(*install, "--no-deps")
            return
        constraint_file = os.path.join(wheelhouse, "constraints.txt")
        with open(constraint_file, "w", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in constraints))
        try:
            pip(*install, "--constraint", constraint_file)
        except subprocess.CalledProcessError:
            print(
                f"note: the lock's pins do not all install for Python {python_version}: resolved afresh, so"
                f" some releases differ from the python3 package (pin them in {RUNTIME_REQUIREMENTS})",
                file=sys.stderr,
            )
            shutil.rmtree(output)
            os.makedirs(output)
            pip(*install)


def runtime_requirements(root: str, runtime: str) -> List[str]:
    """requirements.txt, with the runtime's own file (if any) re-pinning lines by name and adding others."""
    lines = requirement_lines(os.path.join(root, "requirements.txt"))
    own_path = os.path.join(root, RUNTIME_REQUIREMENTS.format(runtime=runtime))
    if runtime == LOCKED_RUNTIME or not os.path.exists(own_path):
        return lines
    own = requirement_lines(own_path)
    replaced = {requirement_name(line) for line in own}
    return [line for line in lines if requirement_name(line) not in replaced] + own


def build(runtime: str, output: str, root: str = ROOT) -> str:
    """Fill ``output`` (a folder) with the function for ``runtime``; return it."""
    python_version = TARGET_PYTHON.get(runtime, RUNTIMES[runtime])
    locked = runtime == LOCKED_RUNTIME
    listed = requirement_lines(check_lock(root)) if locked else runtime_requirements(root, runtime)
    requirements = [line for line in listed if runtime in RUNTIME_ONLY.get(requirement_name(line), {runtime})]
    constraints = []  # type: List[str]
    lock = os.path.join(root, LOCK_FILE)
    if not locked and os.path.exists(lock):
        chosen = {requirement_name(line) for line in requirements}
        constraints = [line for line in requirement_lines(lock) if requirement_name(line) not in chosen]
    if os.path.exists(output):
        shutil.rmtree(output)
    os.makedirs(output)
    bake_settings(runtime, root, output)  # first: a bad .env fails before the download
    install_dependencies(requirements, output, python_version, locked, constraints)
    for name in own_modules(root):
        source = os.path.join(root, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(output, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, output)
    prune(output)
    compile_bytecode(output, RUNTIMES[runtime])
    return output


def bake_settings(runtime: str, root: str, output: str) -> None:
    """Funcraft's python3 package carries the function's settings from the untracked ``.env``:
    plain ``fun deploy`` cannot take them from anywhere but a tracked template (docs/deploy.md)."""
    if runtime != LOCKED_RUNTIME:
        return
    import dotenv_settings  # imports the project's dingtalk_fc: not needed by --list-own

    try:
        print("note: " + dotenv_settings.bake(root, output), file=sys.stderr)  # stdout: the zip's line
    except dotenv_settings.DotenvError as error:
        raise PackageError(str(error)) from None


def write_zip(folder: str, archive: str) -> int:
    """Zip ``folder``'s contents (paths relative to it, as FC unpacks them); return the size."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        for directory, subdirectories, files in os.walk(folder):
            subdirectories.sort()
            for name in sorted(files):
                path = os.path.join(directory, name)
                bundle.write(path, os.path.relpath(path, folder))
    return os.path.getsize(archive)


class NoReleaseForTarget(PackageError):
    """A requirement pins a release that does not run on the lock's Python (exit status 2)."""


def lock_interpreter() -> str:
    """A Python of exactly the lock's target version: another 3.6 would resolve other releases."""
    target = TARGET_PYTHON[LOCKED_RUNTIME]
    exact = os.path.expanduser(f"~/.pyenv/versions/{target}/bin/python{RUNTIMES[LOCKED_RUNTIME]}")
    python = exact if os.access(exact, os.X_OK) else find_interpreter(RUNTIMES[LOCKED_RUNTIME])
    if python is None:
        raise PackageError(f"refreshing the lock needs Python {target} (pyenv install {target})")
    found = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True)
    if found.stdout.decode().strip() != target:
        version = found.stdout.decode().strip()
        raise PackageError(f"the lock targets Python {target} (FC's python3 runtime), {python} is {version}")
    return python


def newest_release_for(python: str, name: str) -> Optional[str]:
    """The newest release of ``name`` that pip under ``python`` would install (one index look-up)."""
    with tempfile.TemporaryDirectory(prefix="probe-") as probe:
        download = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
        result = subprocess.run([*download, "--dest", probe, name], capture_output=True)
        found = os.listdir(probe)
    if result.returncode != 0 or not found:
        return None
    if found[0].endswith(".whl"):  # name-version-tags.whl, with any "-" of the name escaped
        return found[0].split("-")[1]
    return re.sub(r"\.(tar\.gz|tar\.bz2|zip)$", "", found[0]).rsplit("-", 1)[1]  # name-version.tar.gz


def check_releases_exist(python: str, requirements: List[str]) -> None:
    """Name the first pin with no release for the target, and the newest release that has one."""
    for line in requirements:
        download = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
        with tempfile.TemporaryDirectory(prefix="probe-") as probe:
            if subprocess.run([*download, "--dest", probe, line], capture_output=True).returncode == 0:
                continue
        name = re.split(r"[<>=!~\[ ;]", line)[0]
        target = TARGET_PYTHON[LOCKED_RUNTIME]
        newest = newest_release_for(python, name)
        instead = f"the newest that does is {name}=={newest}" if newest else f"no release of {name} does"
        raise NoReleaseForTarget(
            f"{line} has no release for Python {target} (FC's python3 runtime): {instead};"
            f" for FC 3.0 only, pin it in {RUNTIME_REQUIREMENTS.format(runtime='python3.10')}"
        )


def resolve(python: str, root: str, scratch: str, constraints: List[str], override_pins: List[str]) -> Dict[str, str]:
    """Install requirements.txt under the lock's Python into a scratch folder; its pins."""
    target = tempfile.mkdtemp(prefix="site-", dir=scratch)
    constraint_file = target + ".constraints.txt"
    with open(constraint_file, "w", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in constraints))
    base = ["install", "--target", target, "--no-compile", "--no-build-isolation", "--constraint", constraint_file]
    # Top-level requirements without their dependencies first, then each missing dependency
    # (with its own), so an override is never re-resolved against the release that dropped 3.6.
    pip(*base, "--no-deps", "--requirement", os.path.join(root, "requirements.txt"), *override_pins, python=python)
    for _round in range(20):
        missing = missing_dependencies(python, target)
        if not missing:
            break
        pip(*base, *missing, python=python)
    return installed_pins(python, target)


def lock_changes(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
    """What a refresh changed, one line a pin, for the developer to read before committing."""
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            lines.append(f"added   {new}")
        elif new is None:
            lines.append(f"removed {old}")
        else:
            lines.append(f"changed {name} {old.split('==')[1]} -> {new.split('==')[1]}")
    return lines or ["no pin changed"]


def refresh_lock(root: str = ROOT) -> List[str]:
    """Resolve ``requirements.txt`` with pip under the lock's Python and rewrite the lock; the changes.

    Pins already in the lock are kept wherever the requirements still accept them (given to pip
    as constraints): a refresh after adding one requirement does not move unrelated ones.
    Overrides (lines marked ``# override:``) are installed first and kept: they pin a release
    that still supports 3.6 where a dependency asks for a newer one it does not need.
    """
    python = lock_interpreter()
    lock = os.path.join(root, LOCK_FILE)
    overrides = []  # type: List[str]
    previous = []  # type: List[str]
    if os.path.exists(lock):
        with open(lock, encoding="utf-8") as source:
            lines = [line.rstrip("\n") for line in source if not line.startswith("#")]
        overrides = [line for line in lines if OVERRIDE_MARK in line]
        previous = [line.split("#")[0].strip() for line in lines if line.strip() and OVERRIDE_MARK not in line]
    override_pins = [line.split("#")[0].strip() for line in overrides]
    requested = set(pins(requirement_lines(os.path.join(root, "requirements.txt"))))
    kept = [line for line in previous if requirement_name(line) not in requested]
    with tempfile.TemporaryDirectory(prefix="lock-") as scratch:
        # Python 3.6 comes with pip 18, which does not honour Requires-Python everywhere;
        # 21.3 is the last pip for 3.6.
        subprocess.run([python, "-m", "venv", os.path.join(scratch, "venv")], check=True)
        python = os.path.join(scratch, "venv", "bin", "python")
        pip("install", "pip==21.3.1", python=python)
        check_releases_exist(python, requirement_lines(os.path.join(root, "requirements.txt")))
        try:
            resolved = resolve(python, root, scratch, override_pins + kept, override_pins)
        except subprocess.CalledProcessError:
            print("note: the new requirements need other releases than the lock's: resolved afresh", file=sys.stderr)
            resolved = resolve(python, root, scratch, override_pins, override_pins)
    overridden = {requirement_name(pin) for pin in override_pins}
    lines = [line for name, line in sorted(resolved.items()) if name not in overridden]
    with open(lock, "w", encoding="utf-8") as out:
        out.write(LOCK_HEADER + "\n".join(lines + overrides) + "\n")
    before = {requirement_name(line): line for line in previous}
    return lock_changes(before, {requirement_name(line): line for line in lines})


PROBE = """
import sys, pkg_resources
env = pkg_resources.Environment([sys.argv[1]])
dists = [d for name in env for d in env[name]]
names = {d.key for d in dists}
if sys.argv[2] == "missing":
    print("\\n".join(sorted({str(r) for d in dists for r in d.requires() if r.key not in names})))
else:
    print("\\n".join(sorted(d.project_name + "==" + d.version for d in dists)))
"""


def missing_dependencies(python: str, target: str) -> List[str]:
    """Requirements of the installed distributions that are not installed (markers for 3.6)."""
    probe = subprocess.run([python, "-c", PROBE, target, "missing"], capture_output=True, text=True, check=True)
    return [line for line in probe.stdout.splitlines() if line]


def installed_pins(python: str, target: str) -> Dict[str, str]:
    probe = subprocess.run([python, "-c", PROBE, target, "pins"], capture_output=True, text=True, check=True)
    return {canonical(line.split("==")[0]): line for line in probe.stdout.splitlines() if line}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="python3")
    parser.add_argument("--output", help=f"the zip to write (default: {OUTPUT_DIR}/<runtime>.zip)")
    parser.add_argument("--root", default=ROOT, help="the project to package (default: this repository)")
    parser.add_argument("--refresh-lock", action="store_true", help=f"rewrite {LOCK_FILE} with pip under Python 3.6")
    parser.add_argument("--list-own", action="store_true", help="print the project's own modules that are shipped")
    args = parser.parse_args(argv)
    try:
        if args.list_own:
            print(" ".join(own_modules(args.root)))
            return 0
        if args.refresh_lock:
            for line in refresh_lock(args.root):
                print(line)
            print("wrote " + os.path.join(args.root, LOCK_FILE))
            return 0
        archive = args.output or os.path.join(args.root, OUTPUT_DIR, args.runtime + ".zip")
        folder = os.path.splitext(archive)[0]  # kept next to the zip, to look into
        os.makedirs(os.path.dirname(archive), exist_ok=True)
        build(args.runtime, folder, args.root)
        size = write_zip(folder, archive)
    except PackageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, NoReleaseForTarget) else 1
    print(f"{args.runtime} (Python {RUNTIMES[args.runtime]}): {archive}, {size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
