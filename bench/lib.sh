# Helpers shared by the bench/ scripts; sourced, not run. The caller sets
# BENCH_NAME (for messages) and `set -euo pipefail`, and calls bench_init.
#
#   bench_init        REPO, WORK (a temp folder), PIDS, the clean-up trap
#   build_bridge      BIN: the release build (cargo build --release --locked),
#                     or BENCH_BIN when set (an existing binary, no build)
#   stop PID          end one process this script started, and reap it
#   free_port, wait_for SECONDS CMD..., kb KEY PID, mib KB, div A B [FMT]

say() { printf '%s\n' "$*" >&2; }
die() { say "${BENCH_NAME:-bench}: $*"; exit 1; }

bench_init() {
  REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/${BENCH_NAME:-bench}.XXXXXX")
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

build_bridge() {
  if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
  else
    say "building the bridge (cargo build --release --locked)"
    (cd "$REPO" && cargo build --release --locked --bin ischedule-bridge)
    local target=${CARGO_TARGET_DIR:-target}
    case $target in /*) ;; *) target=$REPO/$target ;; esac
    BIN=$target/release/ischedule-bridge
  fi
  [ -x "$BIN" ] || die "no binary at $BIN"
}

stop() { # PID: end one process this script started, and reap it
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Extra clean-up a script needs before its processes are stopped (e.g. a
# daemon that is not our child); empty by default.
bench_cleanup_hook() { :; }

cleanup() {
  local pid
  bench_cleanup_hook
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}

free_port() { # a loopback port free for TCP and UDP
  python3 - <<'PY'
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        u.close(); t.close()
    print(port); break
PY
}

wait_for() { # SECONDS COMMAND...: poll every 0.1 s
  local tries=$(($1 * 10)); shift
  for _ in $(seq "$tries"); do "$@" && return 0; sleep 0.1; done
  return 1
}

kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.1f}" 'BEGIN {if (b > 0) printf f, a / b; else printf "n/a"}'; }
