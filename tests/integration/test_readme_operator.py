"""README's "Try the operator locally" and "To watch the scaling" commands, run as written on the
local cluster (the `local_cluster` fixture starts what `scripts/local-cluster up` starts): helm
installs the chart, the monitor gets a kubeconfig holding only the chart's ServiceAccount token,
the documented command starts it, and the watching commands show its move, its annotations and
its Events.

Changed from the text: the namespace (a test's own), and the router, a canned one on loopback in
place of `modm up` (whose trace replay is not run: tiny models on this machine would take
minutes). The blocks run in a folder standing for the repository's root (links to what they use),
so that monitor.kubeconfig is not written into the working tree.
"""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from modm.devcluster import Cluster
from tests.integration.k8s_monitor import SMALL, eventually, namespace, rolled_out
from tests.integration.test_monitor_loop_k8s import CannedRouter, router  # noqa: F401 - the fixture
from tests.k8s_cluster import K8S_BUILD_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
USED = ("charts", "scripts", "tools", ".tools", ".venv")


def block(marker: str) -> str:
    """The one bash block of the README that holds `marker`, or that follows the prose holding it."""
    parts = re.split(r"```bash\n(.*?)```", README, flags=re.S)  # prose, block, prose, block, ...
    (found,) = [code for prose, code in zip(parts[::2], parts[1::2], strict=False) if marker in prose + code]
    return found


def in_namespace(script: str, ns: str) -> str:
    return re.sub(r"(-n |namespace |NAMESPACE=|--namespace=)modm\b", rf"\g<1>{ns}", script)


def commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("router", [0.5], indirect=True)  # half misses: modm-b grows the large pool
def test_the_readme_walkthrough_installs_starts_the_monitor_and_shows_its_moves(
    local_cluster: Cluster,
    router: tuple[str, CannedRouter],  # noqa: F811
    tmp_path: Path,
) -> None:
    address, _ = router
    root = tmp_path / "repository"
    root.mkdir()
    for name in USED:
        (root / name).symlink_to(ROOT / name)
    env = local_cluster.env()  # KUBECONFIG: the admin's, as `export "$(scripts/local-cluster up ...)"` sets it

    def run(script: str, check: bool = True) -> str:
        done = subprocess.run(["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0 or not check, done.stdout + done.stderr
        return done.stdout + done.stderr

    with namespace(local_cluster, create=False) as ns:  # the README creates it
        # Not checked: the last command, `auth can-i` answering no, exits 1.
        installed = run(in_namespace(block("--set cache.persistence.enabled=false"), ns), check=False)
        assert "STATUS: deployed" in installed and installed.split()[-2:] == ["yes", "no"], installed
        config = yaml.safe_load((root / "monitor.kubeconfig").read_text())
        assert [u["name"] for u in config["users"]] == ["modm-monitor"] and config["users"][0]["user"]["token"]

        watch, *looks = (in_namespace(c, ns) for c in commands(block("To watch the scaling")))
        assert watch.endswith(" -w")
        watching = subprocess.Popen(["bash", "-c", watch], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
        rows: list[str] = []
        reader = threading.Thread(target=lambda: rows.extend(iter(watching.stdout.readline, "")), daemon=True)
        reader.start()
        start = in_namespace(block("MODM_MONITOR_ROUTERS=127.0.0.1:50051"), ns).replace("127.0.0.1:50051", address)
        log = tmp_path / "monitor.log"
        with log.open("wb") as sink:
            monitor = subprocess.Popen(["bash", "-c", start], cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            # `get deploy -w` prints a row per change; READY is ready/replicas, and the pools start at 4.
            eventually(
                lambda: any(r.startswith(f"{SMALL} ") and not r.split()[1].endswith("/4") for r in list(rows)),
                "a move of the small pool in `kubectl get deploy -w`",
            )
        finally:
            watching.terminate()
            monitor.terminate()
            exit_code = monitor.wait(60)
        assert exit_code == 0, log.read_text()

        rolled_out(local_cluster, ns)
        pools, described, events = (run(c) for c in looks)
        assert "Running" in pools and "Pending" not in pools, pools
        assert "modm.io/reason:" in described and "modm.io/target-replicas:" in described, described
        assert re.search(r"Rescaled\s+\S+\s+modm-monitor\s+scaled from 4 to \d replicas: modm-b:", described), described
        assert "deployment/modm-worker-small" in events and "scaled from 4 to" in events, events
