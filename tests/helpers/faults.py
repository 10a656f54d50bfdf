"""Broken peers for fault-injection tests: a CNI plugin and an OCI runtime that fail or hang on
the command a test names, switched at run time through a file (no server restart needed).

Both leave a marker ``<control>.<verb>.hanging`` holding their pid while they hang, so a test
waits for the hang to have begun (never a fixed sleep), and crirt's timeout kills them; a hung
process is that one process, with its own arguments, as a hung runc would be.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.helpers.crirt import Crirt

RUNC = "/usr/sbin/runc"

# A chained plugin that passes the previous result through, unless its control file (a JSON
# object: CNI_COMMAND -> "fail" | "hang") says otherwise. Every call is appended to a log.
_CNI_PLUGIN = r"""#!{python}
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ["CNI_COMMAND"]
control = {control!r}
with open(control + ".calls", "a") as f:
    f.write(cmd + "\n")
try:
    with open(control) as f:
        what = json.load(f).get(cmd, "ok")
except (OSError, ValueError):
    what = "ok"
if what == "fail":
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 11,
                      "msg": "crirt-faulty refuses " + cmd, "details": "injected"}}))
    sys.exit(1)
if what == "hang":
    with open(control + "." + cmd + ".hanging", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(3600)
if cmd == "ADD":
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"]}}))
"""

# runc, unless the control file names the verb of this call: then it hangs (or fails).
_RUNC_WRAPPER = r"""#!/bin/sh
control={control}
verb=""
skip=0
for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$a" in
        --root|--log|--log-format|--criu|--rootless) skip=1 ;;
        --*) ;;
        *) verb="$a"; break ;;
    esac
done
if [ -n "$verb" ] && [ -f "$control" ]; then
    while read -r v what; do
        if [ "$v" = "$verb" ]; then
            if [ "$what" = fail ]; then
                echo '{{"level":"error","msg":"crirt-faulty-runc refuses '"$verb"'"}}' >&2
                exit 1
            fi
            # Blocks in open(2) on a FIFO nobody writes: no child, and this process keeps
            # runc's arguments (crirt finds a monitor's hung runc by them).
            echo $$ > "$control.$verb.hanging"
            read -r _ < "$control.fifo"
            exit 1
        fi
    done < "$control"
fi
exec {runc} "$@"
"""


class FaultyCni:
    """``crirt-faulty`` appended to a test server's CNI config list (after bridge and portmap);
    ``bin_dir`` goes first in ``network.cni_bin_dirs``."""

    def __init__(self, srv: Crirt) -> None:
        self.bin_dir = srv.base / "faulty-bin"
        self.control = srv.base / "cni-faults.json"
        self.bin_dir.mkdir(exist_ok=True)
        plugin = self.bin_dir / "crirt-faulty"
        plugin.write_text(_CNI_PLUGIN.format(python=sys.executable, control=str(self.control)))
        plugin.chmod(0o755)
        conflist = srv.cni_dir / "10-test.conflist"
        doc = json.loads(conflist.read_text())
        doc["plugins"].append({"type": "crirt-faulty"})
        conflist.write_text(json.dumps(doc, indent=1))

    def set(self, **commands: str) -> None:
        """``ADD="fail"``, ``DEL="hang"``, ...; no arguments: every command works again."""
        self.control.write_text(json.dumps(commands))

    def calls(self) -> list[str]:
        path = Path(f"{self.control}.calls")
        return path.read_text().split() if path.exists() else []

    def hanging(self, command: str) -> int | None:
        """The pid of the plugin hanging in ``command`` now, if one is."""
        return _hanging(Path(f"{self.control}.{command}.hanging"))


class FaultyRunc:
    """A runtime handler binary wrapping runc; ``config`` is a crirt.conf that makes it the
    ``runc`` handler (pass ``--config`` it in the server's extra arguments)."""

    def __init__(self, base: Path) -> None:
        self.path = base / "faulty-runc"
        self.control = base / "runc-faults"
        self.config = base / "faulty-runc.conf"
        self.path.write_text(_RUNC_WRAPPER.format(control=str(self.control), runc=RUNC))
        os.mkfifo(f"{self.control}.fifo")
        self.path.chmod(0o755)
        self.config.write_text(f'[runtime.handlers.runc]\npath = "{self.path}"\n')
        self.set()

    def set(self, **verbs: str) -> None:
        """``kill="hang"``, ``update="fail"``, ...; no arguments: plain runc again."""
        self.control.write_text("".join(f"{v} {what}\n" for v, what in verbs.items()))

    def hanging(self, verb: str) -> int | None:
        return _hanging(Path(f"{self.control}.{verb}.hanging"))


def _hanging(marker: Path) -> int | None:
    try:
        pid = int(marker.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and os.path.exists(f"/proc/{pid}") else None
