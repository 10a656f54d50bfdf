#!/usr/bin/env python3
"""Build crirt's offline test images reproducibly and push them to the local registry.

Every image critest v1.36.0 (and crictl smoke tests) pull is rebuilt from Debian binaries found on
this machine, written into an OCI image layout under ``$CRIRT_TESTBED_DIR/images`` and pushed to
``127.0.0.1:5000`` through the OCI distribution API.  See testbed/README.md and
shared/reference/testbed.md section 3 for why each image looks the way it does.

Reproducibility: tar entries are sorted (hard links after their targets), owned by 0:0 with mtime
1700000000, gzip carries mtime 0 and no file name, config and manifest are canonical JSON.  The same
input binaries therefore always give the same digests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"  # MTIME as RFC 3339
ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LIBDIR = "lib/x86_64-linux-gnu"
# Bump when the layer/tar encoding changes, so stale cache entries are not reused.
CACHE_VERSION = "1"

# --------------------------------------------------------------------------------------------
# File contents shared by the images
# --------------------------------------------------------------------------------------------

# The upstream docker.io busybox image's account files (critest relies on www-data = 33).
PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""
NSSWITCH = """\
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
netgroup:       files
"""


def shadow_for(passwd: str) -> str:
    return "".join(f"{line.split(':')[0]}:*:10933:0:99999:7:::\n" for line in passwd.splitlines())


# Debian's busybox builds have no ipcs applet; critest's HostIpc specs run `ipcs -m` and look
# for the id that `ipcmk` printed on the host.  The header lines must contain no digits.
IPCS = r"""#!/bin/sh
# ipcs stand-in for the crirt test bed: lists System V IPC objects from /proc/sysvipc.
m=0 q=0 s=0
for a in "$@"; do
  case "$a" in -m) m=1 ;; -q) q=1 ;; -s) s=1 ;; -a) m=1 q=1 s=1 ;; esac
done
[ "$m$q$s" = 000 ] && m=1 q=1 s=1
exec awk -v m="$m" -v q="$q" -v s="$s" '
function key(k) { k += 0; if (k < 0) k += 4294967296; return sprintf("0x%08x", k) }
function row(a, b, c, d, e, g) { printf "%-10s %-10s %-10s %-10s %-11s %-10s\n", a, b, c, d, e, g }
# /proc/sysvipc/NAME columns: 1 key, 2 id, 3 perms; u = uid column, x and y = two more.
function table(name, title, id, u, x, y, hx, hy,   file, line, f) {
  file = "/proc/sysvipc/" name
  printf "\n------ %s --------\n", title
  row("key", id, "owner", "perms", hx, hy)
  getline line < file
  while ((getline line < file) > 0) {
    split(line, f, " ")
    row(key(f[1]), f[2], (f[u] in names) ? names[f[u]] : f[u], f[3], f[x], f[y])
  }
  close(file)
}
BEGIN {
  while ((getline line < "/etc/passwd") > 0) { split(line, p, ":"); names[p[3]] = p[1] }
  if (q) table("msg", "Message Queues", "msqid", 8, 4, 5, "used-bytes", "messages")
  if (m) table("shm", "Shared Memory Segments", "shmid", 8, 4, 7, "bytes", "nattch")
  if (s) table("sem", "Semaphore Arrays", "semid", 5, 4, 0, "nsems", "")
  print ""
}'
"""

# Debian's busybox builds have no pgrep applet either; critest runs `pgrep sleep` to check that a
# timed-out exec was killed.  Matches an extended regex against /proc/<pid>/comm, like pgrep.
PGREP = r"""#!/bin/sh
# pgrep stand-in for the crirt test bed: pgrep [-l] [-x] PATTERN, matching /proc/<pid>/comm.
l=0 x=0
while [ $# -gt 1 ]; do
  case "$1" in -l) l=1 ;; -x) x=1 ;; -*) ;; *) break ;; esac
  shift
done
[ $# -eq 1 ] || { echo "usage: pgrep [-l] [-x] PATTERN" >&2; exit 2; }
# exec: awk keeps this pid, so it can leave itself out.
exec awk -v pat="$1" -v l="$l" -v x="$x" -v self="$$" '
BEGIN {
  if (x) pat = "^(" pat ")$"
  n = 0
  for (i = 1; i < ARGC; i++) {
    f = ARGV[i]; pid = f; sub("^/proc/", "", pid); sub("/comm$", "", pid)
    if (pid == self || (getline comm < f) <= 0) continue
    close(f)
    if (comm ~ pat) { n++; if (l) print pid, comm; else print pid }
  }
  exit n ? 0 : 1
}' /proc/[0-9]*/comm
"""

# nginx stand-in: PID 1 has comm "nginx" and a cmdline with "master process" (critest's PID
# namespace specs), /var/run/nginx.pid exists (HostPID spec), "Welcome to nginx!" is served on the
# `listen` port of default.conf, and TERM/INT/QUIT stop it at once.
NGINX = r"""#!/bin/sh
# nginx stand-in for the crirt test bed: busybox httpd wearing nginx's process shape.
case "$1" in
  -v | -V) echo "nginx version: nginx/1.14.2 (crirt test-bed stand-in)" >&2; exit 0 ;;
  -t) echo "nginx: configuration file /etc/nginx/nginx.conf test is successful" >&2; exit 0 ;;
  "nginx: master process"*) ;;
  *) exec /usr/sbin/nginx "nginx: master process nginx $*" ;;
esac
port=$(sed -n 's/^[[:space:]]*listen[[:space:]]*\([0-9][0-9]*\).*/\1/p' \
  /etc/nginx/conf.d/default.conf | head -n 1)
echo $$ >/var/run/nginx.pid
httpd -f -p "${port:-80}" -h /usr/share/nginx/html &
child=$!
trap 'kill $child 2>/dev/null; rm -f /var/run/nginx.pid; exit 0' TERM INT QUIT
wait $child
"""
NGINX_CONF = """\
server {
    listen       %d;
    server_name  localhost;
    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
}
"""
NGINX_INDEX = """\
<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>crirt test-bed stand-in (busybox httpd).</p>
</body>
</html>
"""

# httpd stand-in: the multi-container spec wants "httpd" in the log and a page on port 80.
HTTPD = r"""#!/bin/sh
# httpd 2.4 stand-in for the crirt test bed: busybox httpd, Apache-like start-up lines.
ip=$(hostname -i 2>/dev/null)
ip=${ip%% *}
echo "AH00558: httpd: Could not reliably determine the server's fully qualified domain name," \
  "using ${ip:-127.0.0.1}. Set the 'ServerName' directive globally to suppress this message" >&2
echo "[mpm_event:notice] [pid $$] AH00489: Apache/2.4.39 (Unix) configured" \
  "-- resuming normal operations (crirt test-bed stand-in)" >&2
httpd -f -p 80 -h /usr/local/apache2/htdocs &
child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT QUIT WINCH
wait $child
"""

# Upstream busybox's release, from Debian's archive (a package registry reachable offline).
BUSYBOX_TARBALL = "busybox_1.37.0.orig.tar.bz2"
BUSYBOX_URL = f"http://deb.debian.org/debian/pool/main/b/busybox/{BUSYBOX_TARBALL}"
BUSYBOX_SHA256 = "sha256:3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4"

# nonewprivs: setuid-root binary; with no_new_privs the kernel ignores the setuid bit.
NNP_C = b"""#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\\n", (int)geteuid()); return 0; }
"""

# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str  # "dir", "file", "symlink" or "hardlink"
    mode: int = 0o755
    data: bytes = b""
    target: str = ""  # symlink target, or the path a hard link points to


Layer = dict[str, Entry]  # path (relative, no leading "/") -> entry


def d(mode: int = 0o755) -> Entry:
    return Entry("dir", mode)


def f(data: bytes | str, mode: int = 0o644) -> Entry:
    return Entry("file", mode, data.encode() if isinstance(data, str) else data)


def with_parents(layer: Layer) -> Layer:
    """Add every missing parent directory (0755), as image builders do."""
    out = dict(layer)
    for path in layer:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.setdefault("/".join(parts[:i]), d())
    return out


def layer_key(layer: Layer) -> str:
    h = hashlib.sha256(CACHE_VERSION.encode())
    for path in sorted(layer):
        e = layer[path]
        data = hashlib.sha256(e.data).hexdigest()
        h.update(f"{path}\0{e.kind}\0{e.mode:o}\0{data}\0{e.target}\n".encode())
    return h.hexdigest()


def tar_layer(layer: Layer) -> bytes:
    # Hard links go last so that their targets always precede them in the stream.
    paths = sorted(p for p, e in layer.items() if e.kind != "hardlink")
    paths += sorted(p for p, e in layer.items() if e.kind == "hardlink")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in paths:
            e = layer[path]
            ti = tarfile.TarInfo(path)
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = MTIME, 0, 0, "", "", e.mode
            if e.kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, e.target
            elif e.kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, e.target
            else:
                ti.size = len(e.data)
            tf.addfile(ti, io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything run-specific.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Inputs from the host
# --------------------------------------------------------------------------------------------


class Inputs:
    """Host binaries the images are made of, read once and cached under the image dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._dyn: tuple[bytes, list[str]] | None = None
        self._nnp: bytes | None = None
        self._upstream: tuple[bytes, list[str]] | None = None

    def static_busybox(self) -> tuple[bytes, list[str]]:
        exe = "/bin/busybox"  # from busybox-static
        out = run([exe, "--list-full"])
        return Path(exe).read_bytes(), sorted(out.split())

    def _busybox_deb(self) -> Path:
        dirs = [
            Path(os.environ.get("CRIRT_CACHE", "/var/cache/crirt")) / "debs",
            self.workdir / "debs",
        ]
        debs = [p for dd in dirs for p in dd.glob("busybox_*_amd64.deb")]
        if not debs:
            # Downloaded, never installed: it conflicts with busybox-static.
            dest = self.workdir / "debs"
            dest.mkdir(parents=True, exist_ok=True)
            log(f"downloading Debian's busybox .deb into {dest}")
            if subprocess.run(["apt-get", "download", "-qq", "busybox"], cwd=dest).returncode:
                subprocess.run(["apt-get", "update", "-qq"], check=True)
                subprocess.run(["apt-get", "download", "-qq", "busybox"], cwd=dest, check=True)
            debs = list(dest.glob("busybox_*_amd64.deb"))
        return max(debs, key=lambda p: p.stat().st_mtime)

    def dynamic_busybox(self) -> tuple[bytes, list[str]]:
        """Debian's dynamic (non-FEATURE_SH_STANDALONE) busybox and its applet list."""
        if self._dyn is None:
            deb = self._busybox_deb()
            fsys = subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(fsys)) as tf:
                member = tf.extractfile("./bin/busybox")
                assert member is not None
                data = member.read()
            exe = self.workdir / "work" / f"busybox-{hashlib.sha256(data).hexdigest()[:16]}"
            if not exe.exists():
                exe.parent.mkdir(parents=True, exist_ok=True)
                tmp = exe.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.chmod(0o755)
                tmp.rename(exe)
            self._dyn = data, sorted(run([str(exe), "--list"]).split())
        return self._dyn

    def nnp(self) -> bytes:
        """Static setuid test program, compiled once per (source, gcc, libc.a)."""
        if self._nnp is None:
            h = hashlib.sha256(NNP_C)
            h.update(run(["gcc", "--version"]).encode())
            h.update(Path("/usr/lib/x86_64-linux-gnu/libc.a").read_bytes())
            exe = self.workdir / "work" / f"nnp-{h.hexdigest()[:16]}"
            if not exe.exists():
                exe.parent.mkdir(parents=True, exist_ok=True)
                tmp = exe.with_suffix(".tmp")
                # From stdin, so no source path can end up in the binary.
                subprocess.run(
                    ["gcc", "-static", "-O2", "-s", "-o", str(tmp), "-x", "c", "-"],
                    input=NNP_C,
                    check=True,
                )
                tmp.rename(exe)
            self._nnp = exe.read_bytes()
        return self._nnp

    def upstream_busybox(self) -> tuple[bytes, list[str]]:
        """busybox 1.37.0 as upstream builds it (defconfig, static), from Debian's copy of the
        release tarball: the node suite's busybox:1.37.0-2. Debian's own builds lack `nmeter`
        (the lifecycle specs parse its timestamps) and their shell drops environment variables
        whose names are not identifiers (the ConfigMap and Secret env specs expect
        `data-1=value-1`). Built once (a few minutes) and cached by tarball and compiler."""
        if self._upstream is None:
            cache = Path(os.environ.get("CRIRT_CACHE", "/var/cache/crirt")) / "src"
            tarball = cache / BUSYBOX_TARBALL
            if not tarball.exists() or sha256(tarball.read_bytes()) != BUSYBOX_SHA256:
                cache.mkdir(parents=True, exist_ok=True)
                log(f"downloading {BUSYBOX_URL}")
                tmp = tarball.with_suffix(".part")
                subprocess.run(["curl", "-fsSL", "-o", str(tmp), BUSYBOX_URL], check=True)
                if sha256(tmp.read_bytes()) != BUSYBOX_SHA256:
                    tmp.unlink()
                    raise SystemExit(f"mkimage: {BUSYBOX_URL}: checksum mismatch")
                tmp.rename(tarball)
            h = hashlib.sha256(BUSYBOX_SHA256.encode())
            h.update(run(["gcc", "--version"]).encode())
            exe = self.workdir / "work" / f"busybox-upstream-{h.hexdigest()[:16]}"
            if not exe.exists():
                exe.parent.mkdir(parents=True, exist_ok=True)
                build = exe.with_suffix(".build")
                if build.exists():
                    subprocess.run(["rm", "-rf", str(build)], check=True)
                build.mkdir()
                log("building busybox 1.37.0 from source (a few minutes)")
                subprocess.run(["tar", "-xjf", str(tarball), "-C", str(build)], check=True)
                src = build / "busybox-1.37.0"
                env = {**os.environ, "SOURCE_DATE_EPOCH": str(MTIME), "KBUILD_BUILD_USER": "x"}
                env["KBUILD_BUILD_HOST"] = "crirt-testbed"

                def make(*args: str) -> None:
                    res = subprocess.run(
                        ["make", *args], cwd=src, env=env, capture_output=True, text=True
                    )
                    if res.returncode:
                        out = res.stdout[-3000:] + res.stderr[-3000:]
                        raise SystemExit(f"mkimage: busybox make {' '.join(args)}:\n{out}")

                make("defconfig")
                config = (src / ".config").read_text()
                # Static, as upstream's image; tc does not build against current kernel headers.
                config = config.replace("# CONFIG_STATIC is not set", "CONFIG_STATIC=y")
                config = config.replace("CONFIG_TC=y", "# CONFIG_TC is not set")
                (src / ".config").write_text(config)
                make("oldconfig")
                make(f"-j{os.cpu_count() or 1}", "busybox")
                tmp = exe.with_suffix(".tmp")
                (src / "busybox").rename(tmp)
                tmp.rename(exe)
                subprocess.run(["rm", "-rf", str(build)], check=True)
            self._upstream = exe.read_bytes(), sorted(run([str(exe), "--list"]).split())
        return self._upstream


def run(argv: Sequence[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def log(msg: str) -> None:
    print(f"mkimage: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The images
# --------------------------------------------------------------------------------------------


def common_fs(passwd: str = PASSWD, group: str = GROUP) -> Layer:
    """Directories, account files and shims shared by both busybox bases."""
    return {
        "bin": d(),
        "dev": d(),
        "etc": d(),
        "home": d(),
        "proc": d(),
        "root": d(0o700),
        "run": d(),
        "sys": d(),
        "tmp": d(0o1777),
        "usr/bin": d(),
        "usr/sbin": d(),
        "usr/local/bin": d(),
        "var/run": d(),
        "var/spool/mail": d(),
        "var/www": d(),
        "var/tmp": d(0o1777),
        "etc/passwd": f(passwd),
        "etc/group": f(group),
        "etc/shadow": f(shadow_for(passwd), 0o600),
        "etc/nsswitch.conf": f(NSSWITCH),
        "etc/hosts": f(""),
        "etc/hostname": f(""),
        "etc/resolv.conf": f(""),
        "etc/mtab": Entry("symlink", 0o777, target="../proc/self/mounts"),
        "usr/bin/ipcs": f(IPCS, 0o755),
        "usr/bin/pgrep": f(PGREP, 0o755),
    }


def base_symlinks(inp: Inputs) -> Layer:
    """busybox-static with relative symlinks at the --list-full paths (plain busybox image)."""
    data, applets = inp.static_busybox()
    layer = common_fs()
    layer["bin/busybox"] = f(data, 0o755)
    for path in applets:
        if path not in ("bin/busybox", "linuxrc") and path not in layer:
            rel = os.path.relpath("bin/busybox", os.path.dirname(path))
            layer[path] = Entry("symlink", 0o777, target=rel)
    return with_parents(layer)


def base_hardlinks(inp: Inputs) -> Layer:
    """Dynamic busybox, every applet a hard link /bin/<applet>: upstream busybox's layout."""
    data, applets = inp.dynamic_busybox()
    layer = common_fs()
    layer["bin/busybox"] = f(data, 0o755)
    for name in applets:
        if name not in ("busybox", "linuxrc") and f"bin/{name}" not in layer:
            layer[f"bin/{name}"] = Entry("hardlink", 0o755, target="bin/busybox")
    for lib in ("libc.so.6", "libresolv.so.2", "ld-linux-x86-64.so.2"):
        host = Path("/lib/x86_64-linux-gnu", lib).resolve()
        layer[f"{LIBDIR}/{lib}"] = f(host.read_bytes(), 0o755)
    layer["lib64/ld-linux-x86-64.so.2"] = Entry(
        "symlink", 0o777, target=f"../{LIBDIR}/ld-linux-x86-64.so.2"
    )
    return with_parents(layer)


@dataclass
class Image:
    name: str  # for --only
    refs: list[str]  # repository:tag, relative to the registry
    layers: list[Layer]
    config: dict[str, Any] = field(default_factory=dict)  # the OCI config's "config" object


def marker(name: str) -> Layer:
    """An empty file /<name>, as upstream's `ADD ${TEST} ${TEST}`: makes the image ID unique."""
    return {name: f("")}


def all_images(inp: Inputs) -> list[Image]:
    sym, hard = base_symlinks(inp), base_hardlinks(inp)
    sh: dict[str, Any] = {"Cmd": ["sh"]}
    k8s = "k8s-staging-cri-tools/"
    tags = ("1.36", "latest")
    images = [
        Image(
            "busybox",
            [f"{r}:{t}" for r in ("library/busybox", "busybox") for t in tags]
            + [
                f"docker/library/busybox:{t}"
                for t in ("1", "1-glibc", "1-musl", "1-uclibc", "1.35.0-glibc")
            ],
            [sym],
            sh,
        ),
        Image("e2e-busybox", ["e2e-test-images/busybox:1.29-2"], [hard], sh),
        Image(
            "nginx",
            ["e2e-test-images/nginx:1.14-2"],
            [hard, nginx_layer(80)],
            {"Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}}},
        ),
        Image(
            "hostnet-nginx",
            [f"{k8s}hostnet-nginx-amd64:latest"],
            [hard, nginx_layer(12003)],
            {"Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"12003/tcp": {}}},
        ),
        Image(
            "httpd",
            ["e2e-test-images/httpd:2.4.39-4"],
            [hard, httpd_layer()],
            {
                "Cmd": ["httpd-foreground"],
                "ExposedPorts": {"80/tcp": {}},
                "WorkingDir": "/usr/local/apache2",
            },
        ),
        Image(
            "nonewprivs",
            ["e2e-test-images/nonewprivs:1.3"],
            [hard, with_parents({"usr/local/bin/nnp": f(inp.nnp(), 0o4755)})],
            {"Entrypoint": ["/usr/local/bin/nnp"]},
        ),
    ]
    for suffix, user in (
        ("uid", "1002"),
        ("username", "www-data"),
        ("uid-group", "1003:1004"),
        ("username-group", "www-data:1004"),
    ):
        images.append(
            Image(
                f"test-image-user-{suffix}",
                [f"{k8s}test-image-user-{suffix}:latest"],
                [hard],
                {**sh, "User": user},
            )
        )
    # As upstream images/image-predefined-group/Dockerfile: a user 1000 in a group defined there.
    passwd = PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
    group = GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
    accounts: Layer = {
        "etc/passwd": f(passwd),
        "etc/group": f(group),
        "etc/shadow": f(shadow_for(passwd), 0o600),
        "home/default-user": d(),
    }
    images.append(
        Image(
            "test-image-predefined-group",
            [f"{k8s}test-image-predefined-group:latest"],
            [hard, with_parents(accounts)],
            {**sh, "User": "1000"},
        )
    )
    for name in (
        "test-image-1",
        "test-image-2",
        "test-image-3",
        "test-image-latest",
        "test-image-digest",
    ):
        images.append(Image(name, [f"{k8s}{name}:latest"], [hard, marker(name)], sh))
    for tag in ("test", "all"):  # two distinct images, so no test sees an extra RepoTag
        images.append(
            Image(
                f"test-image-tag-{tag}",
                [f"{k8s}test-image-tag:{tag}"],
                [hard, marker(f"test-image-tag-{tag}")],
                sh,
            )
        )
    images.append(
        Image(
            "test-image-tags",
            [f"{k8s}test-image-tags:{t}" for t in "123"],
            [hard, marker("same-image")],
            sh,
        )
    )
    # The pause image: catatonit in pause mode as nobody, like upstream's /pause.
    pause: Layer = {"pause": f(Path("/usr/bin/catatonit").read_bytes(), 0o755)}
    pause_cfg: dict[str, Any] = {"Entrypoint": ["/pause", "-P"], "User": "65535:65535"}
    images.append(Image("pause", ["pause:3.9"], [pause], pause_cfg))
    # Same layer, distinct image ID: a sandbox image that critest's image specs never delete.
    images.append(
        Image(
            "crirt-pause",
            ["crirt/pause:3.9"],
            [pause],
            {**pause_cfg, "Labels": {"io.crirt.role": "sandbox"}},
        )
    )
    return images


def base_upstream(inp: Inputs) -> Layer:
    """busybox 1.37.0 built as upstream does, every applet a hard link /bin/<applet>."""
    data, applets = inp.upstream_busybox()
    layer = common_fs()
    layer["bin/busybox"] = f(data, 0o755)
    for path in applets:
        name = path.rsplit("/", 1)[-1]
        if name not in ("busybox", "linuxrc") and f"bin/{name}" not in layer:
            layer[f"bin/{name}"] = Entry("hardlink", 0o755, target="bin/busybox")
    return with_parents(layer)


def elf_closure(*exes: str) -> Layer:
    """Host executables at their paths, with every shared library ``ldd`` names (and the
    dynamic loader), so they run in an image whose own tools are static."""
    layer: Layer = {}
    for exe in exes:
        real = Path(exe).resolve()
        layer[exe.lstrip("/")] = f(real.read_bytes(), 0o755)
        for line in run(["ldd", str(real)]).splitlines():
            parts = line.split()
            lib = parts[2] if len(parts) >= 3 and parts[1] == "=>" else parts[0]
            if not lib.startswith("/"):
                continue  # linux-vdso.so.1
            name = Path(lib).name
            layer[f"{LIBDIR}/{name}"] = f(Path(lib).resolve().read_bytes(), 0o755)
    layer["lib64/ld-linux-x86-64.so.2"] = Entry(
        "symlink", 0o777, target=f"../{LIBDIR}/ld-linux-x86-64.so.2"
    )
    return with_parents(layer)


def node_e2e_images(inp: Inputs, node_e2e: Path) -> list[Image]:
    """The images Kubernetes' node conformance suite (test/e2e_node, v1.37.2) pulls, from the
    binaries tests/e2e/node-e2e-build.sh built into ``node_e2e`` (bin/agnhost, bin/pause,
    bin/nonewprivs, files/localhost.{crt,key}) and upstream busybox. Each keeps what the
    default NodeConformance set relies on: see tests/e2e/README.md."""
    bb = base_upstream(inp)
    bin_ = node_e2e / "bin"
    sh: dict[str, Any] = {"Cmd": ["sh"]}
    e2e = "e2e-test-images/"
    agnhost: Layer = {
        "agnhost": f((bin_ / "agnhost").read_bytes(), 0o755),
        # The entrypoint specs override the entrypoint with this name.
        "agnhost-2": Entry("symlink", 0o777, target="agnhost"),
        # netexec --tls-cert-file for the https lifecycle hook specs.
        "localhost.crt": f((node_e2e / "files" / "localhost.crt").read_bytes()),
        "localhost.key": f((node_e2e / "files" / "localhost.key").read_bytes()),
    }
    # Probe specs run /bin/bash; hook and networking specs run curl (busybox has nc -u -w).
    tools = elf_closure("/bin/bash", "/usr/bin/curl")
    tools["etc/ssl/certs"] = d()
    images = [
        Image("node-e2e-busybox", [f"{e2e}busybox:1.37.0-2"], [bb], sh),
        Image(
            "node-e2e-agnhost",
            [f"{e2e}agnhost:2.66.1"],
            [bb, tools, agnhost],
            {"Entrypoint": ["/agnhost"], "Cmd": ["pause"]},
        ),
        Image(
            "node-e2e-pause",
            ["pause:3.10.2"],
            [{"pause": f((bin_ / "pause").read_bytes(), 0o755)}],
            {"Entrypoint": ["/pause"], "User": "65535:65535"},
        ),
        Image(
            "node-e2e-nginx",
            [f"{e2e}nginx:1.27.0-2"],
            [bb, nginx_layer(80)],
            {"Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}}},
        ),
        Image("node-e2e-nonroot", [f"{e2e}nonroot:1.5"], [bb], {**sh, "User": "1234"}),
        Image(
            "node-e2e-nonewprivs",
            [f"{e2e}nonewprivs:1.4"],
            [
                bb,
                with_parents({"usr/local/bin/nnp": f((bin_ / "nonewprivs").read_bytes(), 0o4755)}),
            ],
            {"Cmd": ["nnp"]},
        ),
        # A glibc userland whose `hostname -f` asks glibc (nsswitch: files, so /etc/hosts).
        Image(
            "node-e2e-glibc-dns-testing",
            [f"{e2e}glibc-dns-testing:2.1.1"],
            [base_hardlinks(inp)],
            sh,
        ),
    ]
    return images


def fake_registry_layer(layout: Layout, img: Image, repo: str, tag: str) -> Layer:
    """``/var/registry`` as agnhost's fake-registry-server serves it (upstream's agnhost image
    holds pause:3.10.2 there as ``pause:testing`` for the [Serial] registry specs): the tag file
    names the manifest digest; manifests and blobs sit at ``<algo>/<2 hex>/<hex>/data``."""

    def at(kind: str, digest: str) -> str:
        algo, _, hex_ = digest.partition(":")
        return f"var/registry/{repo}/{kind}/{algo}/{hex_[:2]}/{hex_}/data"

    digest, _ = layout.image(img)
    manifest = layout.path(digest).read_bytes()
    parsed = json.loads(manifest)
    layer: Layer = {
        f"var/registry/{repo}/manifests/{tag}": f(digest + "\n"),
        at("manifests", digest): f(manifest),
    }
    for blob in [parsed["config"], *parsed["layers"]]:
        layer[at("blobs", blob["digest"])] = f(layout.path(blob["digest"]).read_bytes())
    return with_parents(layer)


def with_fake_registry(images: list[Image], layout: Layout) -> list[Image]:
    """The node suite's agnhost image with the pause image in its fake registry's directory."""
    by_name = {img.name: img for img in images}
    agnhost = by_name["node-e2e-agnhost"]
    agnhost.layers.append(
        fake_registry_layer(layout, by_name["node-e2e-pause"], "pause", "testing")
    )
    return images


def nginx_layer(port: int) -> Layer:
    return with_parents(
        {
            "usr/sbin/nginx": f(NGINX, 0o755),
            "etc/nginx/conf.d/default.conf": f(NGINX_CONF % port),
            "usr/share/nginx/html/index.html": f(NGINX_INDEX),
            "var/log/nginx": d(),
        }
    )


def httpd_layer() -> Layer:
    return with_parents(
        {
            "usr/local/bin/httpd-foreground": f(HTTPD, 0o755),
            "usr/local/apache2/htdocs/index.html": f(
                "<html><body><h1>It works!</h1></body></html>\n"
            ),
        }
    )


# --------------------------------------------------------------------------------------------
# OCI image layout (the build cache)
# --------------------------------------------------------------------------------------------


class Layout:
    """An OCI image layout; layers.json maps layer inputs to built blobs so re-runs are cheap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.cache_file = root / "layers.json"
        self.cache: dict[str, dict[str, Any]] = {}
        if self.cache_file.exists():
            self.cache = json.loads(self.cache_file.read_text())
        self.built = 0

    def path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        p = self.path(digest)
        if not p.exists():
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(data)
            tmp.rename(p)
        return digest

    def layer(self, layer: Layer) -> dict[str, Any]:
        key = layer_key(layer)
        hit = self.cache.get(key)
        if hit and self.path(hit["digest"]).exists():
            return hit
        tar = tar_layer(layer)
        gz = gzip_bytes(tar)
        hit = {"digest": self.put(gz), "size": len(gz), "diff_id": sha256(tar)}
        self.cache[key] = hit
        self.built += 1
        return hit

    def image(self, img: Image) -> tuple[str, int]:
        """Write config + manifest; return the manifest digest and size."""
        layers = [self.layer(la) for la in img.layers]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": {"Env": [ENV_PATH], **img.config},
            "rootfs": {"type": "layers", "diff_ids": [la["diff_id"] for la in layers]},
            "history": [
                {"created": CREATED, "created_by": f"crirt testbed/mkimage.py {img.name}"}
                for _ in layers
            ],
        }
        cfg = canonical(config)
        manifest = canonical(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": self.put(cfg), "size": len(cfg)},
                "layers": [
                    {"mediaType": MT_LAYER, "digest": la["digest"], "size": la["size"]}
                    for la in layers
                ],
            }
        )
        return self.put(manifest), len(manifest)

    def save(self, refs: dict[str, tuple[str, int]]) -> None:
        """Persist the layer cache and merge refs into index.json (ref.name = repository:tag)."""
        write_atomic(self.cache_file, canonical(self.cache))
        write_atomic(self.root / "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
        index_file = self.root / "index.json"
        known: dict[str, dict[str, Any]] = {}
        if index_file.exists():
            for m in json.loads(index_file.read_text()).get("manifests", []):
                known[m["annotations"]["org.opencontainers.image.ref.name"]] = m
        for ref, (digest, size) in refs.items():
            known[ref] = {
                "mediaType": MT_MANIFEST,
                "digest": digest,
                "size": size,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        write_atomic(
            index_file,
            canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [known[r] for r in sorted(known)],
                }
            ),
        )


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


# --------------------------------------------------------------------------------------------
# Push (OCI distribution API, plain HTTP, one keep-alive connection)
# --------------------------------------------------------------------------------------------


class Registry:
    def __init__(self, addr: str, layout: Layout) -> None:
        host, _, port = addr.partition(":")
        self.conn = http.client.HTTPConnection(host, int(port or 80), timeout=60)
        self.layout = layout
        self.where: dict[str, str] = {}  # blob digest -> a repository known to hold it
        self.pushed_blobs = 0
        self.pushed_manifests = 0

    def call(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        try:
            self.conn.request(method, url, body=body, headers=hdrs)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()  # the registry closed an idle keep-alive connection: retry once
            self.conn.request(method, url, body=body, headers=hdrs)
            resp = self.conn.getresponse()
        resp.read()
        return resp

    def ensure_blob(self, repo: str, digest: str) -> None:
        if self.call("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
            self.where[digest] = repo
            return
        start = f"/v2/{repo}/blobs/uploads/"
        if digest in self.where:  # cross-repository mount: no bytes sent
            q = urllib.parse.urlencode({"mount": digest, "from": self.where[digest]})
            start += "?" + q
        resp = self.call("POST", start)
        if resp.status == 201:
            self.where[digest] = repo
            return
        if resp.status != 202:
            raise RuntimeError(f"POST {start}: HTTP {resp.status}")
        loc = urllib.parse.urlsplit(resp.headers["Location"])
        sep = "&" if loc.query else ""
        put = f"{loc.path}?{loc.query}{sep}{urllib.parse.urlencode({'digest': digest})}"
        data = self.layout.path(digest).read_bytes()
        resp = self.call("PUT", put, data, {"Content-Type": "application/octet-stream"})
        if resp.status != 201:
            raise RuntimeError(f"PUT blob {digest} to {repo}: HTTP {resp.status}")
        self.where[digest] = repo
        self.pushed_blobs += 1

    def push(self, ref: str, digest: str) -> None:
        repo, _, tag = ref.rpartition(":")
        accept = {"Accept": MT_MANIFEST}
        resp = self.call("HEAD", f"/v2/{repo}/manifests/{tag}", headers=accept)
        if resp.status == 200 and resp.headers.get("Docker-Content-Digest") == digest:
            return
        manifest = self.layout.path(digest).read_bytes()
        m = json.loads(manifest)
        for blob in [m["config"], *m["layers"]]:
            self.ensure_blob(repo, blob["digest"])
        resp = self.call(
            "PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": MT_MANIFEST}
        )
        if resp.status != 201:
            raise RuntimeError(f"PUT manifest {ref}: HTTP {resp.status}")
        self.pushed_manifests += 1


# --------------------------------------------------------------------------------------------


def select(images: Iterable[Image], only: Sequence[str]) -> list[Image]:
    """--only matches an image name, a repository or a repository:tag."""
    if not only:
        return list(images)
    chosen = [
        i
        for i in images
        if any(o in (i.name, r, r.rpartition(":")[0]) for o in only for r in i.refs)
    ]
    if not chosen:
        raise SystemExit(f"mkimage: nothing matches {' '.join(only)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    testbed = Path(os.environ.get("CRIRT_TESTBED_DIR", "/var/tmp/crirt-testbed"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--registry", default="127.0.0.1:5000", help="host:port (plain HTTP)")
    ap.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="image name, repository or repository:tag",
    )
    ap.add_argument(
        "--dir",
        type=Path,
        default=testbed / "images",
        help="OCI layout used as build cache (default $CRIRT_TESTBED_DIR/images)",
    )
    ap.add_argument("--no-push", action="store_true", help="build into --dir only")
    ap.add_argument(
        "--node-e2e",
        type=Path,
        metavar="DIR",
        help="build the node conformance suite's images instead, from the binaries in DIR "
        "(tests/e2e/node-e2e-build.sh's output)",
    )
    ap.add_argument("--list", action="store_true", help="list image names and refs, then exit")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    layout = Layout(args.dir)
    inp = Inputs(args.dir)
    if args.node_e2e:
        built = with_fake_registry(node_e2e_images(inp, args.node_e2e), layout)
    else:
        built = all_images(inp)
    images = select(built, args.only)
    if args.list:
        for img in images:
            print(img.name, " ".join(img.refs))
        return 0
    refs: dict[str, tuple[str, int]] = {}
    for img in images:
        manifest = layout.image(img)
        refs.update((ref, manifest) for ref in img.refs)
    layout.save(refs)
    registry = None if args.no_push else Registry(args.registry, layout)
    for ref, (digest, _) in refs.items():
        if registry:
            registry.push(ref, digest)
            ref = f"{args.registry}/{ref}"
        print(ref, digest)
    pushed = (
        f", pushed {registry.pushed_blobs} blobs and {registry.pushed_manifests} manifests"
        if registry
        else ""
    )
    log(
        f"{len(images)} images, {len(refs)} refs, built {layout.built} layers{pushed} "
        f"in {time.monotonic() - t0:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
