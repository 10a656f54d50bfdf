"""Run one target of ``tests/fuzz/targets.py`` under atheris (coverage-guided, libFuzzer):

    python3 -m tests.fuzz.fuzz TARGET [libFuzzer flags] [CORPUS_DIR...]

crirt, the harnesses and the pure-Python stdlib parsers crirt hands its bytes to (tarfile,
tomllib) are instrumented, so ``cov:`` counts their edges (json's scanner is C, and
urllib.parse is imported before this module runs: neither is counted).
An exception or a failed invariant stops the run with a ``crash-*`` file (``-artifact_prefix``).
``tests/fuzz/run.sh`` runs every target for a bounded time.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["crirt", "tests.fuzz", "tarfile", "tomllib"]):
    from tests.fuzz import targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: fuzz.py {{{','.join(targets.TARGETS)}}} [libFuzzer flags] [CORPUS...]")
    target = targets.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
