# Processes of the local cluster: each runs in its own session, with its log in
# $LOGS/NAME.log and its pid and start time in $RUN, so that `up` can tell a component that
# still runs from a reused pid, and `down` stops exactly what `up` started.
# Sourced by scripts/cluster; expects LOGS, RUN and the log/die helpers.

# alive PID: exists and is not a zombie (daemons are reaped late by init)
alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  read -r st <"/proc/$1/stat" 2>/dev/null || return 1
  st="${st##*) }"
  [[ "${st:0:1}" != Z ]]
}

pid_of() { [[ -s "$RUN/$1.pid" ]] && cat "$RUN/$1.pid" || true; }

# starttime PID: field 22 of /proc/PID/stat, guards against reused pids
starttime() {
  local st
  read -r st <"/proc/$1/stat" 2>/dev/null || return 1
  st="${st##*) }"
  # shellcheck disable=SC2086
  set -- $st
  echo "${20}"
}

running() {
  local pid; pid="$(pid_of "$1")"
  [[ -n "$pid" ]] && alive "$pid" && [[ "$(starttime "$pid")" == "$(cat "$RUN/$1.start" 2>/dev/null)" ]]
}

# start NAME BINARY ARGS... : runs in its own session, output to $LOGS/NAME.log
start() {
  local name="$1" bin="$2"; shift 2
  mkdir -p "$RUN" "$LOGS"
  echo "=== $(date -u +%FT%TZ) starting $name" >>"$LOGS/$name.log"
  setsid "$bin" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  starttime $! >"$RUN/$name.start"
}

port_free() { ! (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# launch NAME "PORT:VAR[@ADDR] ..." BINARY ARGS... : starts NAME unless it already runs with
# exactly this command line; restarts it when the command line changed (other ports, a
# rebuilt binary, another configuration)
launch() {
  local name="$1" ports="$2"; shift 2
  local want; want="$(printf '%q ' "$@")"
  if running "$name"; then
    [[ "$(cat "$RUN/$name.cmd" 2>/dev/null)" == "$want" ]] && return 0
    log "restarting $name: its configuration changed"
    stop "$name" 30
  fi
  local p port var addr
  for p in $ports; do
    port="${p%%:*}" var="${p#*:}" addr=127.0.0.1
    [[ "$var" == *@* ]] && { addr="${var#*@}"; var="${var%@*}"; }
    port_free "$port" "$addr" || die "port $addr:$port (for $name) is taken by another process; choose another with $var=PORT"
  done
  start "$name" "$@"
  echo "$want" >"$RUN/$name.cmd"
}

# stop NAME [GRACE]: SIGTERM, then SIGKILL after GRACE seconds
stop() {
  local name="$1" grace="${2:-10}" pid i
  running "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  pid="$(pid_of "$name")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 20; i++)); do
    alive "$pid" || break
    sleep 0.05
  done
  if alive "$pid"; then
    log "$name (pid $pid) did not stop within ${grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$RUN/$name.pid"
}

# wait_for WHAT SECONDS LOGNAME CMD... : polls CMD until it succeeds; fails early when the
# component LOGNAME exits, showing the end of its log
wait_for() {
  local what="$1" secs="$2" logname="$3"; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$logname" ]] && ! running "$logname"; then
      tail -n 20 "$LOGS/$logname.log" >&2 || true
      die "$logname exited while waiting for $what; see $LOGS/$logname.log"
    fi
    ((SECONDS < deadline)) || {
      [[ -n "$logname" ]] && tail -n 20 "$LOGS/$logname.log" >&2
      die "timed out after ${secs}s waiting for $what${logname:+; see $LOGS/$logname.log}"
    }
    sleep 0.2
  done
}
