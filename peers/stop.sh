#!/usr/bin/env bash
# Stops the peers that peers/start.sh recorded in peers/.run/pids, by those
# PIDs only (never by name). Each master gets SIGTERM (nginx, gunicorn and
# danted then stop their own workers; tinyproxy is one process with threads);
# one still alive after ~5 s gets SIGKILL, and so do the children it had when
# we asked it to stop. A recorded PID that no longer runs the recorded program
# (exited, or reused) is left alone. Logs in peers/.run stay for a look
# afterwards; pids and env are removed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
run="$here/.run"
pids_file="$run/pids"

log() { printf 'peers: %s\n' "$*" >&2; }

if [ ! -s "$pids_file" ]; then
  log "nothing recorded in $pids_file; nothing to stop"
  rm -f "$run/env"
  exit 0
fi

# Is PID running (a zombie, exited but not yet reaped by its parent, is not)?
alive() { # pid
  local stat state
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  read -r state _ <<<"${stat##*) }"
  [ "$state" != Z ]
}

# Is PID alive and still running the program we recorded under NAME?
ours() { # name pid
  local want=$1 pid=$2 cmd
  alive "$pid" || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  case $want in
    nginx) [[ $cmd == *nginx* ]] ;;
    httpbin | echo) [[ $cmd == *gunicorn* ]] ;;
    tinyproxy-*) [[ $cmd == *tinyproxy* ]] ;;
    dante-*) [[ $cmd == *danted* ]] ;;
    *) return 1 ;;
  esac
}

# Children of PID, read from /proc (no name matching). With `read`, not a
# `cat` per process: danted alone runs ~20 processes per instance.
children() { # pid
  local parent=$1 f stat ppid
  for f in /proc/[0-9]*/stat; do
    read -r stat 2>/dev/null <"$f" || continue
    # After the command in parentheses (which may hold spaces): state, ppid, ...
    read -r _ ppid _ <<<"${stat##*) }"
    if [ "$ppid" = "$parent" ]; then
      f=${f#/proc/}
      printf '%s\n' "${f%/stat}"
    fi
  done
  return 0
}

names=() pids=() kids=()
while read -r name pid; do
  [ -n "${pid:-}" ] || continue
  if ours "$name" "$pid"; then
    names+=("$name")
    pids+=("$pid")
    kids+=("$(children "$pid" | tr '\n' ' ')")
    kill -TERM "$pid" 2>/dev/null || true
    log "sent TERM to $name (pid $pid)"
  else
    log "$name (pid $pid) is not running; skipped"
  fi
done <"$pids_file"

# Bounded wait: at most 50 x 0.1 s for all of them to go.
for _ in $(seq 1 50); do
  still=0
  for pid in "${pids[@]+"${pids[@]}"}"; do
    alive "$pid" && still=1
  done
  [ "$still" -eq 0 ] && break
  sleep 0.1
done

for i in "${!pids[@]}"; do
  pid=${pids[$i]}
  if alive "$pid"; then
    log "${names[$i]} (pid $pid) still up after TERM; sending KILL to it and its workers ${kids[$i]}"
    # shellcheck disable=SC2086
    kill -KILL "$pid" ${kids[$i]} 2>/dev/null || true
  fi
  # Reap it if it is our own child (it is not when start.sh ran separately).
  wait "$pid" 2>/dev/null || true
done

rm -f "$pids_file" "$run/env"
log "stopped"
