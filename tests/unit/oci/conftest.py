"""Golden-file support for the OCI spec tests.

``pytest tests/unit/oci --update-golden`` (or ``CRIRT_UPDATE_GOLDEN=1 pytest ...`` from any
directory) rewrites tests/unit/oci/golden/*.json from the current output; review the diff like
code. pytest only reads options from conftest files next to the paths on its command line, so
the flag needs this directory (or a file in it) named there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/unit/oci/golden/*.json from the current output",
    )


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """``golden(name, obj)``: assert ``obj`` equals golden/<name>.json (or rewrite it)."""
    update = bool(request.config.getoption("--update-golden", default=False)) or (
        os.environ.get("CRIRT_UPDATE_GOLDEN") == "1"
    )

    def check(name: str, obj: Any) -> None:
        path = GOLDEN_DIR / f"{name}.json"
        text = _dump(obj)
        if update:
            GOLDEN_DIR.mkdir(exist_ok=True)
            path.write_text(text)
            return
        assert path.exists(), f"missing golden file {path}; run pytest with --update-golden"
        assert json.loads(text) == json.loads(path.read_text()), (
            f"{path.name} differs from the output; if intended, rerun with --update-golden"
        )

    return check
