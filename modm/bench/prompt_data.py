"""Readers of the public prompt files a trace builder draws from, by their layout in a data folder.

The folder is always given (`--data DIR`): the project does not know where a team keeps it. Inside
it each source keeps the folder and file name it was published under:

- `diffusiondb-5k`: DiffusionDB's first 5,000 prompts in dataset order, one per line (CC0). Users
  refine prompts, so consecutive lines repeat or nearly repeat each other. Empty lines are
  dropped (the file has one), since a request needs a prompt.
- `diffusiondb-20k`: every 100th row of DiffusionDB's metadata, CSV `image_name,prompt` (CC0): a
  long tail with little reuse.
- `parti`: PartiPrompts, TSV with a `Prompt` column (Apache 2.0). Read without CSV quoting: a
  prompt may start with a quoted word that is part of the text.
- `alibaba`: a production request trace with arrival times and users but no prompt text; see
  modm.bench.sessions.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PromptFile:
    path: str  # inside the data folder
    read: Callable[[Path], list[str]]


def read_lines(path: Path) -> list[str]:
    """One prompt per line. Split on newlines only: `str.splitlines` would also split a prompt at
    characters such as U+2028 or a form feed."""
    text = path.read_text(encoding="utf-8")
    return [p for line in text.split("\n") if (p := line.strip())]


def read_csv_column(path: Path, column: str, *, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> list[str]:
    """The non-empty values of one column of a CSV or TSV file with a header, in file order."""
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter, quoting=quoting)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path}: no {column!r} column (found {reader.fieldnames})")
        return [p for row in reader if (p := (row[column] or "").strip())]


PROMPT_FILES: dict[str, PromptFile] = {
    "diffusiondb-5k": PromptFile("diffusiondb_2m_first5k_prompts/text_diffusiondb_2m_first_5k.txt", read_lines),
    "diffusiondb-20k": PromptFile(
        "diffusiondb_2m_every100th/output_every_100th_row.csv", lambda p: read_csv_column(p, "prompt")
    ),
    "parti": PromptFile(
        "partiprompts/PartiPrompts.tsv",
        lambda p: read_csv_column(p, "Prompt", delimiter="\t", quoting=csv.QUOTE_NONE),
    ),
}
ALIBABA_FILE = "alibaba_gentd26_request_trace/lora_request_trace.csv"


def source_file(data: Path, relative: str) -> Path:
    """A file of the data folder, or an error that names what is missing."""
    path = data / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --data names the folder that holds {relative.split('/')[0]}/")
    return path


def load_prompts(data: Path, source: str) -> tuple[list[str], dict[str, str]]:
    """A source's prompts in file order, and what identifies the file (its name and sha256)."""
    if source not in PROMPT_FILES:
        raise ValueError(f"unknown prompt source {source!r}; choose from {', '.join(PROMPT_FILES)}")
    spec = PROMPT_FILES[source]
    path = source_file(data, spec.path)
    prompts = spec.read(path)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts, describe(path, spec.path)


def describe(path: Path, relative: str) -> dict[str, str]:
    """The file's place in the data folder and its digest: a trace header names its input exactly
    without naming where the folder lives."""
    return {"file": relative, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
