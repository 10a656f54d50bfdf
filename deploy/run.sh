#!/usr/bin/env bash
# Install everything and start crirt with working defaults on this machine (as root):
# Debian packages, crirt itself, the offline registry with the test images, the default CNI
# bridge, /etc/crirt/crirt.conf and /etc/crictl.yaml. Idempotent: re-running restarts crirt.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

scripts/install-deps.sh
testbed/setup.sh

install -d -m 0755 /etc/crirt /etc/cni/net.d /var/lib/crirt/cni
[[ -f /etc/crirt/crirt.conf ]] || install -m 0644 deploy/crirt.conf /etc/crirt/crirt.conf
install -m 0644 testbed/registries.conf /etc/crirt/registries.conf
[[ -f /etc/cni/net.d/10-crirt-bridge.conflist ]] || \
  install -m 0644 deploy/cni/10-crirt-bridge.conflist /etc/cni/net.d/10-crirt-bridge.conflist
[[ -f /etc/crictl.yaml ]] || install -m 0644 deploy/crictl.yaml /etc/crictl.yaml
scripts/net-guard.sh

if [[ -d /run/systemd/system ]]; then
  install -m 0644 deploy/systemd/crirt.service /etc/systemd/system/crirt.service
  systemctl daemon-reload
  systemctl enable crirt >/dev/null 2>&1
  systemctl restart crirt
else
  # No systemd here: run it detached, in its own session, logging to /var/log/crirt.log.
  if [[ -f /run/crirt/crirt.pid ]] && kill -0 "$(cat /run/crirt/crirt.pid)" 2>/dev/null; then
    kill -TERM "$(cat /run/crirt/crirt.pid)"
    for _ in $(seq 50); do kill -0 "$(cat /run/crirt/crirt.pid)" 2>/dev/null || break; sleep 0.1; done
  fi
  mkdir -p /run/crirt
  setsid python3 -m crirt serve </dev/null >>/var/log/crirt.log 2>&1 &
  echo $! >/run/crirt/crirt.pid
fi
for _ in $(seq 100); do
  crictl --runtime-endpoint unix:///run/crirt/crirt.sock version >/dev/null 2>&1 && break
  sleep 0.1
done
crictl --runtime-endpoint unix:///run/crirt/crirt.sock version
echo "crirt is running (log: /var/log/crirt.log). Try: crictl pull busybox && crictl images"
