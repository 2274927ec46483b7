"""`modm eval`: prompts found next to images, CLIP score and the FID fallback on the tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from modm.cli.eval import app, prompts_of

pytest.importorskip("open_clip")
pytest.importorskip("torchmetrics")


def noise_folder(folder: Path, n: int, seed: int, *, sidecars: bool = False) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        prompt = f"a photo of thing number {i}"
        if sidecars:
            (folder / f"{i}.txt").write_text(prompt + "\n")
        else:
            rows.append(json.dumps({"file": f"{i}.png", "prompt": prompt}))
    if rows:
        (folder / "prompts.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def test_prompts_from_the_listing_or_sidecars(tmp_path: Path) -> None:
    listed = noise_folder(tmp_path / "listed", 2, 0)
    beside = noise_folder(tmp_path / "beside", 2, 0, sidecars=True)
    expected = {"0.png": "a photo of thing number 0", "1.png": "a photo of thing number 1"}
    assert prompts_of(listed) == expected == prompts_of(beside)


def test_clip_score_runs_and_says_the_numbers_are_meaningless(tmp_path: Path) -> None:
    folder = noise_folder(tmp_path / "images", 3, 1)
    done = CliRunner().invoke(app, ["clip", str(folder), "--clip-model", "tiny", "--json"])
    assert done.exit_code == 0, done.output
    first = done.output.splitlines()[0]
    scores = json.loads(first)["scores"]
    assert set(scores) == {"0.png", "1.png", "2.png"}
    assert all(0.0 <= s <= 100.0 for s in scores.values())
    assert "meaningless" in done.output


def test_fid_without_inception_weights_falls_back_to_clip_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached Inception weights here
    a = noise_folder(tmp_path / "a", 4, 2)
    b = noise_folder(tmp_path / "b", 4, 3)
    done = CliRunner().invoke(app, ["fid", str(a), str(b), "--clip-model", "tiny", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output.splitlines()[0])
    assert result["metric"].startswith("FD-CLIP") and "not FID" in result["note"]
    assert result["value"] >= 0 and (result["images_a"], result["images_b"]) == (4, 4)
    assert "meaningless" in done.output


def test_fid_needs_images(tmp_path: Path) -> None:
    a = noise_folder(tmp_path / "a", 1, 2)
    done = CliRunner().invoke(app, ["fid", str(a), str(a), "--clip-model", "tiny"])
    assert done.exit_code != 0 and "at least two images" in done.output
