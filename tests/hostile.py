"""Hostile inputs for the property-based tests, and a tally of the cases each test tried.

The strategies produce what an attacker or a broken client sends: control and format
characters, path tricks, huge and empty strings, extreme numbers, and image bytes that are
truncated, bombs, or not the format they claim. `MODM_FUZZ_SCALE` multiplies every test's
example count (benchmarks/fuzz_rpcs.py runs the suites with a larger one); `MODM_FUZZ_REPORT`
names a JSON-lines file the tallies are appended to.
"""

from __future__ import annotations

import functools
import io
import json
import os
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

SCALE = float(os.environ.get("MODM_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int) -> settings:
    """Bounded runs: `examples` (times MODM_FUZZ_SCALE), no per-example deadline."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
        database=None,
    )


class Tally:
    """Cases tried per target, printed and (with MODM_FUZZ_REPORT) appended to a report."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.cases: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    def count(self, target: str, outcome: str) -> None:
        self.cases[target] += 1
        self.outcomes[f"{target} -> {outcome}"] += 1

    def report(self) -> str:
        lines = [f"{self.suite}: {sum(self.cases.values())} hostile cases"]
        lines += [f"  {target}: {n}" for target, n in sorted(self.cases.items())]
        path = os.environ.get("MODM_FUZZ_REPORT")
        if path:
            with Path(path).open("a") as out:
                row = {"suite": self.suite, "cases": dict(self.cases), "outcomes": dict(self.outcomes)}
                out.write(json.dumps(row) + "\n")
        return "\n".join(lines)


def mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` four times in five: with every field usually plausible, a good share of whole
    requests is accepted, so accepted requests are checked as much as refusals."""
    return st.integers(0, 4).flatmap(lambda n: hostile if n == 0 else valid)


# --- text --------------------------------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    "\t\n\r",
    "\x00",
    "a\x00b",
    "\x1b[31mred\x1b[0m",
    "../../etc/passwd",
    "..",
    ".",
    "/etc/shadow",
    "a/../../b",
    "..\\..\\windows",
    "%2e%2e%2f",
    "C:\\Windows",
    "tenant' or '1'=='1",
    'tenant" || true',
    "${jndi:ldap://x}",
    "\u202egnp.exe",
    "\ufeffbom",
    "\u200b",
    "\U0001d54f" * 8,
    "\u0301" * 50,
    "e\u0301",
    "\U0001f600",
    "\uffff",
    "\x7f",
    "entries/other-tenant/0123",
]

CONTROL_AND_FORMAT = st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Co"))
hostile_text = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=64),
    st.text(alphabet=CONTROL_AND_FORMAT, max_size=64),
    st.text(alphabet=st.characters(min_codepoint=0x10000), max_size=16),
)


def text_up_to(limit: int) -> st.SearchStrategy[str]:
    """Hostile text plus strings around and far beyond `limit` characters."""
    sizes = st.sampled_from([limit - 1, limit, limit + 1, limit * 4])
    return st.one_of(
        hostile_text,
        sizes.map(lambda n: "x" * max(n, 0)),
        sizes.map(lambda n: "\U0001f600" * max(n, 0)),
        sizes.map(lambda n: " " * max(n, 0)),
    )


# --- numbers -----------------------------------------------------------------------------

U32_EDGES = [0, 1, 2, 7, 8, 63, 64, 65, 2**15, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
U64_EDGES = [0, 1, 2**31, 2**32 - 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
uint32s = st.one_of(st.sampled_from(U32_EDGES), st.integers(0, 2**32 - 1))
uint64s = st.one_of(st.sampled_from(U64_EDGES), st.integers(0, 2**64 - 1))
# What Python callers can hand the validators directly (the wire cannot carry negatives in uint).
any_ints = st.one_of(uint64s, st.integers(-(2**64), -1))
float32s = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e-45, 3.4e38, -3.4e38, 1.0]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)
float64s = st.one_of(float32s, st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, 5e-324]))


# --- images ------------------------------------------------------------------------------


def encoded(width: int, height: int, fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode in ("L", "P", "1") else (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, payload: bytes = b"", extra: bytes = b"") -> bytes:
    """A PNG whose header claims `width` x `height` (8-bit grey), with `payload` as its pixels."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + extra + png_chunk(b"IDAT", zlib.compress(payload)) + png_chunk(b"IEND", b"")


def text_bomb() -> bytes:
    """A valid 8x8 PNG with a zTXt chunk inflating to 64 MiB."""
    bomb = png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * (64 << 20), 9))
    return png_claiming(8, 8, b"\x00" * (8 * 9), extra=bomb)


@functools.cache
def pixel_bomb(side: int = 10_000) -> bytes:
    """A real PNG of side x side zero pixels: about 100 KB per 10^8 pixels it inflates to."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


VALID_SMALL = [encoded(32, 32, "PNG"), encoded(32, 32, "JPEG"), encoded(32, 32, "WEBP"), encoded(16, 48, "PNG", "P")]
MALFORMED_IMAGES = {
    "empty": b"",
    "png signature only": b"\x89PNG\r\n\x1a\n",
    "truncated png": VALID_SMALL[0][: len(VALID_SMALL[0]) // 2],
    "truncated jpeg": VALID_SMALL[1][:40],
    "zero-size png": png_claiming(0, 0),
    "huge header, no pixels": png_claiming(2**31 - 1, 2**31 - 1),
    "bad crc": VALID_SMALL[0][:30] + bytes([VALID_SMALL[0][30] ^ 0xFF]) + VALID_SMALL[0][31:],
    "ztxt bomb": text_bomb(),
    "pixel bomb": pixel_bomb(),
    "gif": encoded(8, 8, "GIF", "P"),
    "bmp": encoded(8, 8, "BMP"),
    "tiff": encoded(8, 8, "TIFF"),
    "ico": encoded(16, 16, "ICO"),
    "ppm": encoded(8, 8, "PPM"),
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "html": b"<html><script>alert(1)</script></html>",
}


def mutate(data: bytes, position: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    position %= len(data)
    return data[:position] + bytes([value]) + data[position + 1 :]


hostile_images = st.one_of(
    st.sampled_from(list(MALFORMED_IMAGES.values())),
    st.sampled_from(VALID_SMALL),
    st.binary(max_size=256),
    st.builds(lambda d, n: d[:n], st.sampled_from(VALID_SMALL), st.integers(0, 400)),
    st.builds(mutate, st.sampled_from(VALID_SMALL), st.integers(0, 10_000), st.integers(0, 255)),
    st.builds(png_claiming, st.sampled_from(U32_EDGES), st.sampled_from(U32_EDGES)),
)
