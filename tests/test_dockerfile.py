"""Checks of the job image definition that need no Docker engine.

jobs/Dockerfile is parsed here instead of built: the base image, the user,
the entrypoint and the PyTorch build argument. The runtime pin file is
checked against requirements.lock and the packages' declared dependencies.
"""

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "jobs" / "Dockerfile"
JOB_REQUIREMENTS = ROOT / "jobs" / "requirements-job.txt"
LOCK = ROOT / "requirements.lock"
# `pip freeze` leaves setuptools out of requirements.lock, but torch needs it at run time.
PINNED_OUTSIDE_LOCK = {"setuptools"}
DEV_ONLY = {"apache-airflow", "pytest", "moto", "ruff", "kubernetes-validate", "playwright"}
CREDENTIAL_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|AWS_|S3_", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    result = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, arguments = current.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        current = ""
    return result


def stages(text: str) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Return the ARG defaults before the first FROM and the instructions of each stage."""
    global_args: dict[str, str] = {}
    found: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, arguments))
        elif keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
    return global_args, found


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda match: values[match[1] or match[2]], text)


def arg_defaults(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(arguments.partition("=")[::2] for keyword, arguments in stage if keyword == "ARG")


def base_images() -> list[str]:
    global_args, found = stages(DOCKERFILE.read_text())
    return [substitute(stage[0][1].split()[0], global_args) for stage in found]


def final_stage() -> list[tuple[str, str]]:
    return stages(DOCKERFILE.read_text())[1][-1]


def pins(path: Path) -> dict[str, str]:
    result = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{path.name}: {line} is not an exact pin"
            result[canonicalize_name(requirement.name)] = specifier.version
    return result


def runtime_closure(roots: list[str]) -> set[str]:
    """Return the names of `roots` and of everything they require here, extras left out."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """Return (is_exception, regex) per .dockerignore line, in order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        position = 0
        while position < len(pattern):
            if pattern.startswith("**/", position):
                regex, position = regex + "(?:.*/)?", position + 3
            elif pattern.startswith("**", position):
                regex, position = regex + ".*", position + 2
            elif pattern[position] == "*":
                regex, position = regex + "[^/]*", position + 1
            elif pattern[position] == "?":
                regex, position = regex + "[^/]", position + 1
            elif pattern[position] == "[":
                end = pattern.index("]", position)
                regex, position = regex + pattern[position:end + 1], end + 1
            else:
                regex, position = regex + re.escape(pattern[position]), position + 1
        rules.append((exception, re.compile(regex)))
    return rules


def ignored(path: str, rules) -> bool:
    """Apply Docker's rule: the last pattern that matches the path or a parent folder wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not exception
    return result


def make_dry_run(*variables: str) -> list[str]:
    output = subprocess.run(["make", "--no-print-directory", "-n", "image", *variables], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    command = output.replace("\\\n", " ")
    (build,) = [line for line in command.splitlines() if line.strip().startswith("docker build")]
    return shlex.split(build)


# Base image and stages

def test_base_image_pinned():
    images = base_images()

    assert len(images) >= 2, "expected a build stage and a final stage"
    # The final stage copies the build stage's virtual environment, whose
    # interpreter links must exist there too.
    assert len(set(images)) == 1
    for image in images:
        match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-\w+(@sha256:[0-9a-f]{64})?", image)
        assert match, f"{image} is not pinned to a full Python version"
        assert (int(match[1]), int(match[2])) == sys.version_info[:2], (
            "the image's Python must match the one requirements.lock was installed with")


def test_final_stage_runs_as_job_user():
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    uid, _, gid = users[-1].partition(":")
    job = next(document for document in yaml.safe_load_all((ROOT / "k8s" / "job.yaml").read_text())
               if document and document["kind"] == "Job")
    pod_context = job["spec"]["template"]["spec"]["securityContext"]

    assert uid.isdigit(), "USER must be a numeric user ID"
    assert int(uid) > 0, "USER must not be root"
    assert gid.isdigit(), "USER must name a numeric group ID"
    assert int(gid) > 0
    assert (int(uid), int(gid)) == (pod_context["runAsUser"], pod_context["runAsGroup"])


def test_entrypoint_is_cubicfit():
    stage = dict(final_stage())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

    assert json.loads(stage["ENTRYPOINT"]) == ["cubicfit"]
    assert isinstance(json.loads(stage["CMD"]), list)
    assert "cubicfit" in scripts


def test_torch_build_argument():
    build = stages(DOCKERFILE.read_text())[1][0]
    defaults = arg_defaults(build)
    runs = " ".join(arguments for keyword, arguments in build if keyword == "RUN")
    index_url = re.search(r'--index-url\s+"?([^"\s]+)', runs)[1]
    requirement = re.search(r'"?torch==([^"\s]+)"?', runs)[1]
    locked_torch = Version(pins(LOCK)["torch"]).public

    assert defaults["TORCH_BUILD"] == "cpu"
    assert index_url == "https://download.pytorch.org/whl/${TORCH_BUILD}"
    assert substitute(requirement, defaults) == locked_torch


def test_make_image_selects_torch_build():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    cpu = make_dry_run()
    gpu = make_dry_run("GPU=1")

    assert cpu[cpu.index("--file") + 1] == "jobs/Dockerfile"
    assert cpu[-1] == "."
    assert "TORCH_BUILD=cpu" in cpu
    assert any(re.fullmatch(r"TORCH_BUILD=cu\d+", argument) for argument in gpu)
    assert gpu[gpu.index("--tag") + 1] == cpu[cpu.index("--tag") + 1] + "-cuda"


def test_final_stage_has_no_build_tools():
    for keyword, arguments in final_stage():
        assert keyword != "ADD"
        if keyword == "COPY":
            assert arguments.startswith("--from="), f"final stage copies from context: {arguments}"
        if keyword == "RUN":
            assert not re.search(r"pip\s+install|apt-get\s+install|apt\s+install", arguments)


def test_image_has_no_credentials():
    for stage in stages(DOCKERFILE.read_text())[1]:
        for keyword, arguments in stage:
            if keyword in ("ARG", "ENV"):
                names = re.findall(r"(?:^|\s)(\w+)=", arguments) or [arguments.split("=")[0]]
                for name in names:
                    assert not CREDENTIAL_NAME.search(name), f"{keyword} {name} in the image"


# Build context

def test_dockerignore_keeps_only_sources():
    rules = ignore_rules((ROOT / ".dockerignore").read_text())
    sources = []
    for stage in stages(DOCKERFILE.read_text())[1]:
        for keyword, arguments in stage:
            if keyword == "COPY" and not arguments.startswith("--from="):
                sources.extend(arguments.split()[:-1])

    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [file for file in path.rglob("*.py")
                                               if "__pycache__" not in file.parts]
        assert files, f"COPY source {source} does not exist"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not ignored(relative, rules), f"{relative} is needed by COPY but ignored"
    for relative in (".venv/bin/python", ".git/HEAD", "results/runs/x/result.json",
                     "tests/conftest.py", ".env", "k8s/minio.yaml", "jobs/Dockerfile",
                     "jobs/cubicfit.egg-info/PKG-INFO",
                     "jobs/cubicfit/__pycache__/cli.cpython-311.pyc"):
        assert ignored(relative, rules), f"{relative} would be sent to the build"


# Runtime pins

def test_job_pins_match_lock():
    locked = pins(LOCK)
    job = pins(JOB_REQUIREMENTS)

    for name, version in job.items():
        if name in PINNED_OUTSIDE_LOCK and name not in locked:
            continue
        assert locked.get(name) == version, (
            f"{name}=={version}, but requirements.lock has {locked.get(name)}")
    assert not job.keys() & DEV_ONLY
    assert "torch" not in job  # installed from the PyTorch index of the chosen build


def test_job_pins_cover_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = [Requirement(line).name for line in project["dependencies"]]
    roots += [Requirement(line).name for line in project["optional-dependencies"]["torch"]]

    assert set(pins(JOB_REQUIREMENTS)) == runtime_closure(roots) - {"torch"}
