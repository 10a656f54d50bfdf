"""Regenerate crirt/_gen from proto/api.proto.

The .proto is staged as crirt/_gen/api.proto in a temporary include root so
the generated gRPC module imports ``crirt._gen.api_pb2`` rather than a bare
top-level ``api_pb2``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "crirt" / "_gen"
        staged.mkdir(parents=True)
        shutil.copy(ROOT / "proto" / "api.proto", staged / "api.proto")
        out.mkdir(parents=True, exist_ok=True)
        rc = protoc.main(
            [
                "protoc",
                f"-I{tmp}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(staged / "api.proto"),
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with {rc}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
