#!/usr/bin/env bash
# Run a command as root in a cgroup v2 + systemd guest, in a copy of this checkout, and return
# its output and exit status:
#   testbed/vm/run.sh [--engine uml|qemu] [--timeout SEC] [--mem MIB] [--cpus N]
#                     [--env KEY=VALUE]... [--keep] CMD [ARG...]
# e.g. `testbed/vm/run.sh ./critest.sh` is critest in the guest. The image comes from build.sh
# (built once, cached). Engines:
#   uml   user-mode Linux (default): ~2x slower than the host for CPU work, one vCPU, controllers
#         cpu io memory pids (no cpuset, hugetlb or PSI in its kernel); boots in ~15 s.
#   qemu  QEMU with software emulation (TCG; /dev/kvm here serves only PVM guests): ~8x slower,
#         --cpus vCPUs, Debian's kernel with every controller and PSI.
# Every run starts from the pristine image (copy-on-write), the VM is always ended at the
# timeout (exit 124), and nothing is left on the host but the image cache. The guest's output is
# printed as it comes; files the command copies to $CRIRT_VM_ARTIFACTS in the guest land in
# $CRIRT_VM_ARTIFACTS_DIR on the host (default: discarded).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
engine=uml timeout=3600 mem=4096 cpus=2 keep=0
envs=()
while (($#)); do
  case "$1" in
    --engine) engine=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
(($#)) || { sed -n '2,17p' "${BASH_SOURCE[0]}" >&2; exit 2; }
case "$engine" in uml|qemu) ;; *) echo "run.sh: engine must be uml or qemu" >&2; exit 2 ;; esac
if [[ $engine == qemu ]] && ! command -v qemu-system-x86_64 >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >&2
fi

img=$("$HERE/build.sh")
run=$(mktemp -d /var/tmp/crirt-vm.XXXXXX)
share="$run/share"
mkdir -p "$share/tools" "$share/artifacts"
vm_pid=""
cleanup() {
  set +e
  if [[ -n "$vm_pid" ]] && kill -0 "$vm_pid" 2>/dev/null; then
    kill -KILL -- "-$vm_pid" 2>/dev/null
    wait "$vm_pid" 2>/dev/null
  fi
  if [[ -n "${CRIRT_VM_ARTIFACTS_DIR:-}" ]]; then
    mkdir -p "$CRIRT_VM_ARTIFACTS_DIR"
    cp -a "$share/artifacts/." "$CRIRT_VM_ARTIFACTS_DIR/" 2>/dev/null
    cp "$run/console.log" "$CRIRT_VM_ARTIFACTS_DIR/console.log" 2>/dev/null
  fi
  if ((keep)); then echo "run.sh: kept $run" >&2; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The checkout as it is (tracked and untracked files, not ignored ones).
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$REPO" && git ls-files -z -co --exclude-standard | tar --null -T - -cf "$share/src.tar")
else
  tar -C "$REPO" --exclude=.git --exclude=__pycache__ -cf "$share/src.tar" .
fi
printf '%q ' "$@" >"$share/cmd"
{
  # The host's CI flag and crirt test settings go in; anything else only by --env.
  for var in CI $(compgen -e | grep -E '^CRIRT_' | grep -vE '^CRIRT_VM_' || true); do
    [[ -n "${!var:-}" ]] && printf '%s=%q\n' "$var" "${!var}"
  done
  for kv in ${envs[@]+"${envs[@]}"}; do printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"; done
} >"$share/env"
# Tools built on the host by scripts/install-deps.sh (Go programs, the newer runc), installed at
# the same paths in the guest; hard links where the file system allows.
: >"$share/tools/MANIFEST"
add_tool() {
  local src=$1 dest=${2:-$1} name
  [[ -f "$src" ]] || return 0
  name="$(basename "$dest")"
  cp -l "$src" "$share/tools/$name" 2>/dev/null || cp "$src" "$share/tools/$name"
  echo "$name $dest" >>"$share/tools/MANIFEST"
}
for t in crictl critest ginkgo; do add_tool "/usr/local/bin/$t"; done
add_tool /usr/local/lib/crirt/kubelet
add_tool /usr/local/lib/crirt/runc-1.3
for deb in /var/cache/crirt/debs/busybox_*.deb; do add_tool "$deb"; done

cmdline="rw systemd.unified_cgroup_hierarchy=1 quiet"
: >"$run/console.log"
if [[ $engine == uml ]]; then
  # UML keeps the guest's memory in a file under TMPDIR: on disk, not in the host's /tmp.
  mkdir -p "$run/tmp"
  setsid env TMPDIR="$run/tmp" linux.uml "ubd0=$run/cow.img,$img/root.img" root=/dev/ubda \
    "mem=${mem}M" con0=null,fd:1 con=null $cmdline "crirt.share=hostfs:$share" \
    </dev/null >"$run/console.log" 2>&1 &
else
  # PSI is compiled into Debian's kernel but off unless asked for. The image is never written
  # (snapshot=on writes to a temporary overlay): no lock, so that it boots beside UML guests,
  # which hold the same file open as their backing disk.
  setsid qemu-system-x86_64 -accel tcg,thread=multi -smp "$cpus" -m "$mem" -nographic \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "root=LABEL=vmroot console=ttyS0 psi=1 $cmdline crirt.share=9p:crirtshare" \
    -drive "file=$img/root.img,format=raw,if=virtio,snapshot=on,file.locking=off" \
    -virtfs "local,path=$share,mount_tag=crirtshare,security_model=passthrough,id=share" \
    -nic none -serial "file:$run/console.log" -monitor none \
    </dev/null >"$run/qemu.log" 2>&1 &
fi
vm_pid=$!
touch "$share/out"
tail -n +1 -f --pid="$vm_pid" "$share/out" &
tail_pid=$!
deadline=$((SECONDS + timeout))
while kill -0 "$vm_pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    echo "run.sh: the guest did not finish within ${timeout}s; killing it" >&2
    kill -KILL -- "-$vm_pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$vm_pid" 2>/dev/null || true
vm_pid=""
wait "$tail_pid" 2>/dev/null || true
if [[ -f "$share/rc" ]]; then
  rc=$(cat "$share/rc")
  echo "run.sh: guest command exited with status $rc ($engine)" >&2
  exit "$rc"
fi
echo "run.sh: the guest ended without an exit status; console:" >&2
tail -n 40 "$run/console.log" >&2
[[ -f "$run/qemu.log" ]] && tail -n 10 "$run/qemu.log" >&2
exit 124
