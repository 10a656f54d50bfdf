#!/usr/bin/env bash
# Build (once) the guest image of the VM test bed: Debian bookworm with systemd as PID 1 on a
# cgroup v2 hierarchy, crirt's runtime parts and Python dependencies, ready to run a command from
# the host (testbed/vm/run.sh). Prints the image directory. Idempotent and cached: the image is
# rebuilt only when its recipe changes (this script, packages.txt, guest/, the Python
# dependencies in pyproject.toml, the host's user-mode-linux kernel).
#   CRIRT_VM_CACHE   where images live (default /var/cache/crirt/vm)
# Needs (Debian): mmdebstrap, e2fsprogs, user-mode-linux; qemu-system-x86 only to boot with QEMU.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${CRIRT_VM_CACHE:-/var/cache/crirt/vm}"
MIRROR="${CRIRT_VM_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# Sparse: only what the guest writes takes host disk (the COW file of each run).
SIZE=12G

# Only the image directory goes to stdout (callers capture it); everything else to stderr.
exec 3>&1 1>&2
log() { printf '[vm-build] %s\n' "$*" >&2; }

need=()
for p in mmdebstrap e2fsprogs user-mode-linux; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qF "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  log "apt: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends "${need[@]}" >&2; }
fi

uml_version=$(dpkg-query -W -f='${Version}' user-mode-linux)
uml_modules=$(find /usr/lib/uml/modules -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1)
# The Python packages crirt and its guest tests import, from pyproject.toml: the runtime
# dependencies plus the test runner's (no linters: they run on the host).
py_deps=$(python3 - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
dev = doc["project"]["optional-dependencies"]["dev"]
keep = [d for d in dev if d.split("=")[0].split(">")[0].split("<")[0] in
        ("pytest", "pytest-timeout", "requests")]
print("\n".join(doc["project"]["dependencies"] + keep))
PY
)
key=$( {
  cat "$HERE/build.sh" "$HERE/packages.txt"
  find "$HERE/guest" -type f -print0 | sort -z | xargs -0 cat
  printf '%s\n' "$py_deps" "$uml_version" "$uml_modules"
} | sha256sum | cut -c1-16)
img="$CACHE/img-$key"

mkdir -p "$CACHE"
exec 7>"$CACHE/build.lock"
flock -w 1800 7 || { log "another build holds $CACHE/build.lock"; exit 1; }
if [[ -f "$img/ready" ]]; then
  echo "$img" >&3
  exit 0
fi

log "building $img (2-4 minutes)"
work="$CACHE/.build-$key"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
pkgs=$(grep -vE '^\s*(#|$)' "$HERE/packages.txt" | paste -sd, -)
mmdebstrap --variant=minbase --include="$pkgs" --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  "$SUITE" "$root" "$MIRROR" >"$work/mmdebstrap.log" 2>&1 \
  || { tail -n 30 "$work/mmdebstrap.log" >&2; exit 1; }

# UML's kernel has no nf_tables for IPv4: the legacy iptables (x_tables) serve the CNI portmap
# plugin, the network guard and the kubelet in both engines.
for t in iptables ip6tables; do
  chroot "$root" update-alternatives --quiet --set "$t" "/usr/sbin/$t-legacy"
done

# UML boots the host's user-mode-linux kernel: its modules (overlay, veth, bridge, netfilter)
# must be in the guest. QEMU boots the guest's own kernel (linux-image-amd64 above).
mkdir -p "$root/lib/modules"
cp -a "$uml_modules" "$root/lib/modules/"

# Python wheels for the guest's python3 (3.11, like the host's), installed by the host's pip.
log "pip: installing crirt's dependencies into the guest"
mapfile -t deps <<<"$py_deps"
python3 -m pip install --disable-pip-version-check -q --no-compile \
  --target "$root/usr/local/lib/python3.11/dist-packages" \
  --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "${deps[@]}" >"$work/pip.log" 2>&1 || { tail -n 30 "$work/pip.log" >&2; exit 1; }

# The guest's side of run.sh: a unit that runs the host's command once the system is up.
install -m 0755 "$HERE/guest/crirt-vm-run" "$root/usr/local/sbin/crirt-vm-run"
install -m 0644 "$HERE/guest/crirt-vm-run.service" "$root/etc/systemd/system/"
ln -sf /etc/systemd/system/crirt-vm-run.service \
  "$root/etc/systemd/system/multi-user.target.wants/crirt-vm-run.service"
# Nothing else runs: no logins, no timers, and the registry only when the test bed starts it.
for unit in getty@.service serial-getty@.service console-getty.service docker-registry.service \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer systemd-timesyncd.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
echo crirt-guest >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost crirt-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
  >"$root/etc/hosts"
: >"$root/etc/fstab"
# No DNS in the guest: the pods' resolv.conf is copied from here.
echo "nameserver 127.0.0.1" >"$root/etc/resolv.conf"
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\n' \
  >"$root/etc/systemd/journald.conf.d/crirt-vm.conf"

# QEMU's kernel and initrd, beside the disk image.
cp -L "$root/vmlinuz" "$work/vmlinuz"
cp -L "$root/initrd.img" "$work/initrd.img"
mke2fs -q -t ext4 -d "$root" -L vmroot "$work/root.img" "$SIZE"
rm -rf "$root"
echo "$key" >"$work/ready"
# Only the current image is kept.
find "$CACHE" -mindepth 1 -maxdepth 1 -name 'img-*' -exec rm -rf {} +
mv "$work" "$img"
trap - EXIT
log "ready: $img ($(du -sh "$img" | cut -f1) on disk)"
echo "$img" >&3
