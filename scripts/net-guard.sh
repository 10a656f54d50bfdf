#!/usr/bin/env bash
# Network guard rails for crirt's pod bridge (../shared/reference/testbed.md §4): pod traffic
# never leaves the host. Idempotent: run it as often as you like; --remove undoes it.
#
#   scripts/net-guard.sh [--bridge crirt0] [--subnet 10.88.0.0/16] [--remove]
#
# - FORWARD drops what a pod sends to any other interface than its bridge;
# - FORWARD drops new connections forwarded into the bridge from elsewhere;
# - a "prohibit" route for the pod subnet (metric 4000) keeps the subnet off the default route
#   while the bridge is down.
# Pods also get no default route and no masquerading (see deploy/cni/10-crirt-bridge.conflist).
# No pipefail: `cmd | grep -q` would fail on grep's early exit (testbed.md §7.3); output is
# captured into variables instead.
set -eu

BRIDGE=crirt0
SUBNET=10.88.0.0/16
ACTION=install
while [ $# -gt 0 ]; do
  case "$1" in
    --bridge) BRIDGE="$2"; shift 2 ;;
    --subnet) SUBNET="$2"; shift 2 ;;
    --remove) ACTION=remove; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "net-guard: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "${#BRIDGE}" -gt 15 ]; then echo "net-guard: bridge name too long: $BRIDGE" >&2; exit 2; fi

COMMENT="crirt-guard $BRIDGE"
RULE_OUT=(FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment "$COMMENT" -j DROP)
RULE_IN=(FORWARD -o "$BRIDGE" ! -i "$BRIDGE" -m conntrack ! --ctstate RELATED,ESTABLISHED
         -m comment --comment "$COMMENT" -j DROP)

ipt() { iptables -w 5 "$@"; }

rule_install() {
  if ! ipt -C "$@" 2>/dev/null; then
    ipt -I "$@"
  fi
}

rule_remove() {
  # -D removes one copy; loop in case an older tool inserted duplicates.
  local n=0
  while ipt -C "$@" 2>/dev/null && [ "$n" -lt 32 ]; do
    ipt -D "$@"
    n=$((n + 1))
  done
}

route_present() {
  local routes
  routes=$(ip -4 route show type prohibit) || return 1
  case $'\n'"$routes"$'\n' in
    *$'\n'"prohibit $SUBNET metric 4000"*) return 0 ;;
    *) return 1 ;;
  esac
}

case "$ACTION" in
  install)
    rule_install "${RULE_OUT[@]}"
    rule_install "${RULE_IN[@]}"
    # `replace` is idempotent; metric 4000 keeps the bridge's own route (metric 0) preferred.
    ip -4 route replace prohibit "$SUBNET" metric 4000
    ;;
  remove)
    rule_remove "${RULE_OUT[@]}"
    rule_remove "${RULE_IN[@]}"
    if route_present; then
      ip -4 route del prohibit "$SUBNET" metric 4000
    fi
    ;;
esac
