"""The vendored CRI proto and the committed stubs must agree."""

import hashlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# kubernetes/cri-api v0.36.3 pkg/apis/runtime/v1/api.proto, byte for byte.
API_PROTO_SHA256 = "6d130c2651d335bfc755d25efc63072a1cd1eba3591ead6422dc0a27f20167f3"


def test_api_proto_is_the_vendored_tag() -> None:
    data = (ROOT / "proto" / "api.proto").read_bytes()
    assert hashlib.sha256(data).hexdigest() == API_PROTO_SHA256
    assert data.startswith(b"/*\nCopyright 2020 The Kubernetes Authors.")


def test_generated_stubs_match_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("genproto", ROOT / "scripts" / "genproto.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.generate(tmp_path)
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        fresh = (tmp_path / "crirt" / "_gen" / name).read_text()
        committed = (ROOT / "crirt" / "_gen" / name).read_text()
        assert fresh == committed, f"crirt/_gen/{name} is stale: run scripts/genproto.py"
