"""The project's code and docs stand on their own: they cite no document outside the
repository (a design note or a shared folder next to the checkout), they state the fact."""

from __future__ import annotations

import subprocess

from tests.tools import ROOT

# Split so that this file does not match itself.
OUTSIDE = "DESIGN" + r"\.md|\.\./" + "shared"


def test_nothing_cites_a_document_outside_the_repository() -> None:
    done = subprocess.run(["git", "grep", "-n", "-E", OUTSIDE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, f"citations of documents outside the repository:\n{done.stdout}{done.stderr}"
