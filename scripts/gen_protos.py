"""Generate the Python gRPC stubs (with .pyi) for protos/ into the modm package.

`--check` regenerates into a scratch folder and fails if the committed stubs differ, so CI
catches a proto edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("modm") / "v1"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.glob("modm/v1/*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out_root / PACKAGE_DIR
    (pkg / "__init__.py").write_text('"""Generated gRPC stubs for the modm.v1 API (scripts/gen_protos.py)."""\n')
    return sorted(p.relative_to(pkg) for p in pkg.iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args()
    target = ROOT / PACKAGE_DIR
    if not args.check:
        shutil.rmtree(target, ignore_errors=True)
        files = generate(ROOT)
        print(f"generated {len(files)} files into {target}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh_files = generate(Path(tmp))
        committed = sorted(p.relative_to(target) for p in target.iterdir() if p.is_file())
        stale = sorted(set(fresh_files) ^ set(committed))
        stale += [
            f
            for f in fresh_files
            if f in committed and not filecmp.cmp(Path(tmp) / PACKAGE_DIR / f, target / f, shallow=False)
        ]
    if stale:
        print(
            f"generated stubs are stale ({', '.join(map(str, stale))}): run scripts/gen_protos.py",
            file=sys.stderr,
        )
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
