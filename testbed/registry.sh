#!/usr/bin/env bash
# Local OCI registry for the offline test bed: Debian's docker-registry on 127.0.0.1:5000.
#   testbed/registry.sh start|stop|status
# State lives in $CRIRT_TESTBED_DIR (default /var/tmp/crirt-testbed): registry/ (blobs),
# registry.yml, registry.pid, logs/registry.log.
set -euo pipefail

DIR="${CRIRT_TESTBED_DIR:-/var/tmp/crirt-testbed}"
ADDR="${CRIRT_REGISTRY_ADDR:-127.0.0.1:5000}"
BIN="${CRIRT_REGISTRY_BIN:-/usr/bin/docker-registry}"
PIDFILE="$DIR/registry.pid"
CONF="$DIR/registry.yml"
LOG="$DIR/logs/registry.log"

log() { printf '[registry] %s\n' "$*"; }
answers() { curl -sf -o /dev/null --max-time 2 "http://$ADDR/v2/"; }
# The pid of our registry: the pidfile's if that process still serves $CONF, else (lost or
# stale pidfile) the process whose command line is `docker-registry serve $CONF`.
ourpid() {
  local pid=""
  [[ -f "$PIDFILE" ]] && pid="$(cat "$PIDFILE")"
  if [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] \
      && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -F "serve $CONF" >/dev/null; then
    echo "$pid"
    return 0
  fi
  pgrep -o -f -- "serve $CONF\$"
}

write_config() {
  mkdir -p "$DIR/registry" "$DIR/logs"
  cat >"$CONF.tmp" <<YML
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  redirect:
    disable: true
http:
  secret: crirt-testbed-local
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
YML
  mv "$CONF.tmp" "$CONF"
}

start() {
  if ourpid >/dev/null && answers; then
    log "running (pid $(ourpid)) on $ADDR"
    return 0
  fi
  if answers; then
    # Someone else (another test bed, a manual run) serves the address: use it as is.
    log "$ADDR already answers /v2/ (not started by this script); leaving it alone"
    return 0
  fi
  if pid="$(ourpid)"; then
    log "pid $pid does not answer; restarting it"
    kill "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$PIDFILE"
  write_config
  # setsid: the registry must outlive this shell and not get its terminal's signals. It must not
  # keep any other fd of its caller either: setup.sh and critest.sh hold their flock on an fd,
  # and a registry inheriting it would hold that lock for as long as it runs (the next setup.sh
  # would wait forever).
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd="${fd##*/}"
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$BIN" serve "$CONF" </dev/null >>"$LOG" 2>&1
  ) &
  echo $! >"$PIDFILE"
  for _ in $(seq 100); do
    if answers; then
      log "started (pid $(cat "$PIDFILE")) on $ADDR, storage $DIR/registry"
      return 0
    fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 0.1
  done
  log "failed to start; last log lines:"
  tail -n 20 "$LOG" >&2
  return 1
}

stop() {
  local pid
  if pid="$(ourpid)"; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped (pid $pid)"
  else
    log "not running"
  fi
  rm -f "$PIDFILE"
}

status() {
  local pid
  if pid="$(ourpid)" && answers; then
    log "running (pid $pid) on $ADDR"
  elif answers; then
    log "$ADDR answers, but not a registry started by this script"
  else
    log "not running"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
