"""The one logging set-up: both formats carry a record's fields, and libraries' logs and Python
warnings come out in the chosen format, without the understood noise. configure_logging changes
process-wide state, so it runs in a child interpreter."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from modm.logs import TextFormatter


def record(msg: str, level: int = logging.INFO, **fields: object) -> logging.LogRecord:
    entry = logging.LogRecord("modm.services.monitor.loop", level, __file__, 1, msg, None, None)
    entry.__dict__.update(fields)
    return entry


def stderr_of(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_text_lines_carry_the_records_fields() -> None:
    line = TextFormatter("monitor").format(record("decision", action="keep", reason="queue too long", large=2))
    assert line.endswith('monitor modm.services.monitor.loop: decision action=keep reason="queue too long" large=2')


def test_text_lines_keep_a_multi_line_field_on_its_line_and_the_traceback_after_it() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", logging.ERROR, error="line one\nline two", exc_info=sys.exc_info())
    text = TextFormatter("cache").format(failed)
    first, *rest = text.splitlines()
    assert first.endswith('failed error="line one\\nline two"')
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def test_library_logs_and_warnings_come_out_in_the_one_format() -> None:
    lines = stderr_of(
        """
import logging, warnings
import pymilvus  # attaches its own stderr handler, in its own format
from modm.logs import configure_logging

configure_logging("cache", "INFO", "json")
logging.getLogger("faiss.loader").info("Loading faiss with AVX512 support.")
logging.getLogger("pymilvus.client.iterator.query_iterator").warning("a pymilvus warning")
warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning)
warnings.warn("a warning nobody understood", UserWarning)
"""
    )
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) == len(lines), lines  # every line is one JSON record
    assert [(r["logger"], r["level"]) for r in records] == [
        ("pymilvus.client.iterator.query_iterator", "WARNING"),
        ("py.warnings", "WARNING"),
    ]
    assert records[0]["service"] == "cache" and "a warning nobody understood" in records[1]["msg"]


def test_loading_bars_are_off_in_this_process_and_its_children() -> None:
    stderr_of(
        """
import os
from transformers.utils import logging as transformers_logging
from modm.logs import configure_logging

configure_logging("worker", "INFO", "text")
assert not transformers_logging.is_progress_bar_enabled()
assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # read by huggingface_hub when imported
"""
    )
