#!/usr/bin/env python3
"""Derive the `replace` lines of tools/k8s/go.mod from k8s.io/kubernetes' own go.mod.

k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and
replaces them with folders of its own repository (`./staging/src/k8s.io/<name>`), which a module
that requires k8s.io/kubernetes does not see. Each of them is published on its own at v0.<minor>.<patch>
(k8s.io/kubernetes v1.36.3 goes with k8s.io/api v0.36.3), so our module replaces every one of them
with that version. The list is read, never typed: this script asks `go` for the pinned release's
go.mod (`go list -m -json`, which fetches only that file), reads it with `go mod edit -json`, takes
the modules it requires at v0.0.0 (each replaced there by a `./staging/` folder; the samples it
replaces but does not require are left out), and writes
(default) or checks (`--check`) the replace lines of tools/k8s/go.mod. `scripts/build-k8s` runs
`--check` before every build.

    python3 tools/k8s/staging.py            # rewrite the replaces after changing the k8s.io/kubernetes pin
    python3 tools/k8s/staging.py --check    # exit 1, naming the differences, when go.mod is out of date
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KUBERNETES = "k8s.io/kubernetes"


def go_json(*args: str, cwd: Path | str = HERE) -> dict:
    done = subprocess.run([os.environ.get("GO", "go"), *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"staging.py: go {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def pinned_kubernetes(gomod: dict) -> str:
    for req in gomod.get("Require") or []:
        if req["Path"] == KUBERNETES:
            return req["Version"]
    sys.exit(f"staging.py: tools/k8s/go.mod does not require {KUBERNETES}")


def staging_version(kubernetes_version: str) -> str:
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        sys.exit(f"staging.py: {KUBERNETES} {kubernetes_version} is not a plain v1.<minor>.<patch> release")
    return f"v0.{match[1]}.{match[2]}"


def staging_modules(kubernetes_version: str) -> list[str]:
    """The modules that k8s.io/kubernetes@version requires at v0.0.0 from its ./staging/ folders."""
    with tempfile.TemporaryDirectory() as outside:  # outside any module: only the release's go.mod is read
        info = go_json("list", "-m", "-json", f"{KUBERNETES}@{kubernetes_version}", cwd=outside)
    upstream = go_json("mod", "edit", "-json", info["GoMod"])
    at_zero = {r["Path"] for r in upstream.get("Require") or [] if r["Version"] == "v0.0.0"}
    replaces = upstream.get("Replace") or []
    from_staging = {r["Old"]["Path"] for r in replaces if r["New"]["Path"].startswith("./staging/")}
    if not at_zero or not at_zero <= from_staging:
        sys.exit(
            "staging.py: the release's go.mod no longer replaces each module it requires at v0.0.0 with a "
            f"./staging/ folder: {sorted(at_zero - from_staging) or 'none required at v0.0.0'}"
        )
    return sorted(at_zero)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check go.mod; exit 1 when it differs")
    args = parser.parse_args()

    ours = go_json("mod", "edit", "-json")
    version = pinned_kubernetes(ours)
    target = staging_version(version)
    wanted = {path: target for path in staging_modules(version)}
    have = {r["Old"]["Path"]: r["New"].get("Version", r["New"]["Path"]) for r in ours.get("Replace") or []}
    if have == wanted:
        print(f"tools/k8s/go.mod: {len(wanted)} staging modules of {KUBERNETES} {version} replaced at {target}")
        return 0
    if args.check:
        missing = sorted(set(wanted) - set(have))
        extra = sorted(set(have) - set(wanted))
        wrong = sorted(p for p in set(have) & set(wanted) if have[p] != wanted[p])
        print(
            f"tools/k8s/go.mod is out of date with {KUBERNETES} {version}: missing {missing}, extra {extra}, "
            f"wrong version {wrong}; run python3 tools/k8s/staging.py",
            file=sys.stderr,
        )
        return 1
    edits = [f"-dropreplace={path}" for path in sorted(set(have) - set(wanted))]
    edits += [f"-replace={path}={path}@{target}" for path in sorted(wanted)]
    subprocess.run([os.environ.get("GO", "go"), "mod", "edit", *edits], cwd=HERE, check=True)
    print(f"tools/k8s/go.mod: replaced {len(wanted)} staging modules of {KUBERNETES} {version} at {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
