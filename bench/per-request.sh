#!/usr/bin/env bash
# Cost per request of the bridge, independent of machine load: instructions
# (valgrind's callgrind) and system calls (strace -c), for pass-through and
# for an iSchedule POST routed to a native receiver. For comparing code
# changes where wall-clock throughput on a shared machine is too noisy.
#
#   bench/per-request.sh
#
# Set-up as bench/proxy.sh: an nginx upstream answering capabilities and a
# fixed schedule-response, the bridge with server.origin and a static
# [[route]] to it, the same 403-byte iTIP body, on one kept-alive connection
# (a Python client, outside the measurement). For each kind of request:
#   strace    the bridge runs natively; strace -c -f attaches for N requests
#             after a warm-up: system calls per request by name
#   callgrind the bridge runs under callgrind; after a warm-up of W requests
#             the counters are zeroed, N requests sent, the counters dumped:
#             instructions (Ir) per request, and the top functions by
#             exclusive instructions (callgrind_annotate) in the work folder
#
# Environment (all optional):
#   BENCH_REQUESTS=1000 (N)   BENCH_WARMUP=200 (W)
#   BENCH_LOG=info            the bridge's RUST_LOG
#   BENCH_KEEP=1              keep the work folder (callgrind.out files)
#   BENCH_BIN                 an existing bridge binary instead of building
set -euo pipefail
BENCH_NAME=per-request
. "$(dirname "$0")/lib.sh"
bench_init
cd "$REPO"
N=${BENCH_REQUESTS:-1000}
W=${BENCH_WARMUP:-200}
LOG=${BENCH_LOG:-info}
ORIGINATOR=mailto:alice@example.com
scripts/ensure-packages nginx-light:nginx valgrind:valgrind strace:strace curl:curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_bridge

UP_PORT=$(free_port) PORT=$(free_port)
RESPONSE='<?xml version="1.0" encoding="utf-8"?><schedule-response xmlns="urn:ietf:params:xml:ns:ischedule"><response><recipient>mailto:user001@native.test</recipient><request-status>2.0;Success</request-status></response></schedule-response>'
mkdir -p "$WORK/nginx/logs" "$WORK/upstream" "$WORK/bridge"
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT;
    root $WORK/upstream;
    default_type application/xml;
    location = /ischedule {
      if (\$request_method = POST) { return 200 '$RESPONSE'; }
      try_files /capabilities.xml =404;
    }
    location / { return 200 '$RESPONSE'; }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/logs/stderr" 2>&1 &
PIDS+=("$!")
cat >"$WORK/bridge/bridge.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$(free_port)"
origin = "http://127.0.0.1:$UP_PORT"
[[route]]
domain = "native.test"
to = "http://127.0.0.1:$UP_PORT/ischedule"
EOF

day=$(date -u -d '+30 days' +%Y%m%d)
printf 'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ischedule-bridge//bench//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:proxy-bench-1@example.com\r\nDTSTAMP:%sT090000Z\r\nSEQUENCE:0\r\nDTSTART:%sT130000Z\r\nDTEND:%sT140000Z\r\nSUMMARY:Staff planning\r\nLOCATION:Room 4\\, 2nd floor\r\nORGANIZER:%s\r\nATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:user001@native.test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n' \
  "$(date -u +%Y%m%d)" "$day" "$day" "$ORIGINATOR" >"$WORK/body.ics"

# send PATH COUNT: COUNT POSTs on one kept-alive connection; fails unless
# every answer is 200 (and, for the receiver path, carries the 2.0 status)
send() {
  python3 - "$PORT" "$1" "$2" "$WORK/body.ics" "$ORIGINATOR" <<'PY'
import http.client, sys
port, path, count, body, originator = sys.argv[1], sys.argv[2], int(sys.argv[3]), open(sys.argv[4], "rb").read(), sys.argv[5]
headers = {"Content-Type": "text/calendar; component=VEVENT; method=REQUEST", "iSchedule-Version": "1.0",
           "Originator": originator, "Recipient": "mailto:user001@native.test"}
c = http.client.HTTPConnection("127.0.0.1", int(port))
for i in range(count):
    c.request("POST", path, body, headers)
    r = c.getresponse(); data = r.read()
    if r.status != 200 or (path.endswith("ischedule") and b"2.0;Success" not in data):
        sys.exit(f"answer {i}: {r.status} {data[:300]!r}")
PY
}

# start_bridge [WRAPPER...]: the bridge, optionally under a wrapper
start_bridge() {
  (cd "$WORK/bridge" && RUST_LOG=$LOG exec "$@" "$BIN" serve --config bridge.toml) >"$WORK/bridge/bridge.log" 2>&1 &
  BRIDGE=$!
  PIDS+=("$BRIDGE")
  wait_for 120 curl -sf -o /dev/null "http://127.0.0.1:$PORT/.well-known/ischedule?action=capabilities" ||
    die "the bridge did not start: $(tail -20 "$WORK/bridge/bridge.log")"
}
start_bridge
curl -sf -o "$WORK/upstream/capabilities.xml" "http://127.0.0.1:$PORT/.well-known/ischedule?action=capabilities"
wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$UP_PORT/ischedule?action=capabilities" ||
  die "nginx did not start: $(cat "$WORK/nginx/logs/"*)"

KINDS="passthrough:/dav/inbox post:/.well-known/ischedule"
echo "ischedule-bridge cost per request ($(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')), RUST_LOG=$LOG, $N requests after $W warm-up, one connection"
for kind in $KINDS; do
  name=${kind%%:*} path=${kind#*:}
  send "$path" "$W"
  strace -c -f -p "$BRIDGE" -o "$WORK/strace-$name.txt" &
  tracer=$!
  sleep 1 # strace attaches to every thread
  send "$path" "$N"
  kill -INT "$tracer"; wait "$tracer" || true
  echo "syscalls per request, $name:"
  awk -v n="$N" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $4 / n >= 0.05 {printf "  %-16s %.2f\n", $NF, $4 / n}' \
    "$WORK/strace-$name.txt"
done
stop "$BRIDGE"

start_bridge valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p"
for kind in $KINDS; do
  name=${kind%%:*} path=${kind#*:}
  send "$path" "$W"
  callgrind_control --zero "$BRIDGE" >/dev/null
  send "$path" "$N"
  callgrind_control --dump="$name" "$BRIDGE" >/dev/null
  sleep 1
  out=$(ls -t "$WORK"/callgrind.out.* | head -1)
  mv "$out" "$WORK/callgrind-$name.out"
  ir=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$WORK/callgrind-$name.out")
  printf 'instructions per request, %s: %s\n' "$name" "$(div "$ir" "$N" %.0f)"
  callgrind_annotate --inclusive=no "$WORK/callgrind-$name.out" 2>/dev/null |
    sed -n '/^Ir/,$p' | sed -n '3,27p' >"$WORK/top-$name.txt" || true
  echo "  top functions (exclusive Ir): $WORK/top-$name.txt"
  head -12 "$WORK/top-$name.txt" | sed 's/^/    /'
done
