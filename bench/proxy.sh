#!/usr/bin/env bash
# HTTP benchmark of the bridge against nginx (issue 10): pass-through and
# iSchedule POSTs, each next to nginx proxying the same upstream, in one run.
#
#   bench/proxy.sh
#
# Rows (wrk POSTs the same 403-byte iTIP body, as in the issue, to every row):
#   nginx direct       wrk -> the upstream itself
#   nginx proxy        wrk -> nginx (proxy_pass, keepalive pool) -> upstream
#   pass-through       wrk -> the bridge, a non-iSchedule path, server.origin
#   POST (logs info)   wrk -> the bridge's /.well-known/ischedule; validated,
#                      routed by a static [[route]] to the upstream as the
#                      native receiver, its schedule-response merged; the
#                      default log level, one line per POST ("realistic")
#   POST (logs warn)   the same with RUST_LOG=warn
# The upstream is nginx: GET /ischedule?action=capabilities answers a valid
# capabilities document (the bridge's own, fetched at start), any POST a
# fixed schedule-response for the recipient. Everything on 127.0.0.1 in a
# temp folder; the servers (upstream, proxy, bridge) share core 0, wrk
# (1 thread) runs on core 1. Each round runs every row at 16 and 128
# connections, alternating rows, and pass-through, nginx proxy and POST at
# 1,000; the table shows medians over the rounds. Ratios are to the nginx
# proxy of this run, never a constant. RSS is the bridge's VmHWM: once
# after the first round's 128-connection runs, once at the end (so
# including 1,000 connections); each bridge runs for the whole benchmark.
#
# Then, each with the same rounds, unless turned off:
#   Cyrus    POSTs to a real Cyrus 3.6 receiver directly vs through the
#            bridge (static route), 16 connections (Cyrus forks per request)
#   native   POSTs with 1, 10, 100 recipients of one native receiver (the
#            upstream, answering 2.0 for each), 16 connections: cost per
#            recipient
#   LMTP in  iMIP invitations into the bridge's LMTP listener (from a local
#            client, bench/lmtp-load.py, 16 connections), each delivered as
#            iSchedule to the upstream as the native receiver
#   iMIP     POSTs with 1, 10, 100 recipients routed imip-only into
#            Postfix's smtp-sink (not the bottleneck: it stores nothing,
#            and runs on wrk's core); mails/s counts the recipients
#            answered 1.1 (sent)
#
# Environment (all optional):
#   BENCH_SECONDS=6        seconds per wrk run
#   BENCH_ROUNDS=3         alternating rounds (medians over them)
#   BENCH_CONNECTIONS="16 128"   connection counts of the main table
#   BENCH_MANY=1000        the high-concurrency row (0: skip it)
#   BENCH_CYRUS=1          0: skip the Cyrus comparison
#   BENCH_NATIVE=1         0: skip native fan-out
#   BENCH_LMTP=1           0: skip LMTP in
#   BENCH_IMIP=1           0: skip iMIP out
#   BENCH_IMIP_CONNECTIONS=4   wrk connections for iMIP out
#   BENCH_SERVER_CPU=0 BENCH_CLIENT_CPU=1   taskset cores
#   BENCH_KEEP=1           keep the work folder (logs, configs) and print it
#   BENCH_BIN              an existing bridge binary instead of building
#   CARGO_TARGET_DIR       honoured for the build
#   ISCHEDULE_SHARED       the shared/ folder (default ../shared)
#
# Installs nginx-light, wrk, postfix (for smtp-sink; its own daemon is never
# started: debconf "No configuration"), curl; Cyrus through
# shared/peers/cyrus-ischedule.sh. Speed is measured, not asserted: goals
# are printed met / not met, and the script fails only on a broken set-up
# or answers that are not 200.
set -euo pipefail
BENCH_NAME=proxy-bench
. "$(dirname "$0")/lib.sh"
bench_init
cd "$REPO"
SHARED=${ISCHEDULE_SHARED:-$REPO/../shared}
SECONDS_PER_RUN=${BENCH_SECONDS:-6}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-16 128}
MANY=${BENCH_MANY:-1000}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
ORIGINATOR=mailto:alice@example.com

# --- tools -----------------------------------------------------------------
if ! command -v smtp-sink >/dev/null && [ ! -x /usr/sbin/smtp-sink ]; then
  # Postfix asks what to configure; "No configuration" writes no main.cf,
  # so no system MTA comes up on port 25.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
fi
scripts/ensure-packages nginx-light:nginx wrk:wrk postfix:smtp-sink curl:curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
build_bridge
# Ulimit for 1,000 connections through a proxy (2 sockets each) and more.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

server() { taskset -c "$SERVER_CPU" "$@"; }

# --- the request -------------------------------------------------------------
# One iTIP REQUEST of 403 bytes (as in the issue), dates 30 days ahead.
make_body() { # FILE RECIPIENT...
  local file=$1 day r; shift
  day=$(date -u -d '+30 days' +%Y%m%d)
  {
    printf 'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ischedule-bridge//bench//EN\r\nMETHOD:REQUEST\r\n'
    printf 'BEGIN:VEVENT\r\nUID:proxy-bench-1@example.com\r\nDTSTAMP:%sT090000Z\r\nSEQUENCE:0\r\n' "$(date -u +%Y%m%d)"
    printf 'DTSTART:%sT130000Z\r\nDTEND:%sT140000Z\r\nSUMMARY:Staff planning\r\n' "$day" "$day"
    printf 'LOCATION:Room 4\\, 2nd floor\r\n'
    printf 'ORGANIZER:%s\r\n' "$ORIGINATOR"
    for r in "$@"; do printf 'ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:%s\r\n' "$r"; done
    printf 'END:VEVENT\r\nEND:VCALENDAR\r\n'
  } >"$file"
}
recipients() { # DOMAIN N
  local i
  for i in $(seq "$2"); do printf 'mailto:user%03d@%s\n' "$i" "$1"; done
}

# --- the upstream and the proxy (nginx) --------------------------------------
UP_PORT=$(free_port) PROXY_PORT=$(free_port)
NATIVE=native.test
# The receiver's answer: one 2.0 status for the one native recipient.
RESPONSE="<?xml version=\"1.0\" encoding=\"utf-8\"?><schedule-response xmlns=\"urn:ietf:params:xml:ns:ischedule\"><response><recipient>mailto:user001@$NATIVE</recipient><request-status>2.0;Success</request-status></response></schedule-response>"
start_nginx() { # NAME SERVER-BLOCK
  local dir=$WORK/nginx-$1
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  keepalive_requests 1000000;
  $2
}
EOF
  # taskset itself in the background (not the server function), so that
  # $! is nginx and the clean-up stops it: a backgrounded function is a
  # subshell, and killing that left every run's two nginx running.
  taskset -c "$SERVER_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" >"$dir/logs/stderr" 2>&1 &
  PIDS+=("$!")
}
# Native fan-out: /fan-N answers 2.0 for user001..userN of fanN.test, so
# each size gets an answer of its own size. The answer is a file (too long
# for an nginx directive): the static module refuses POST with 405, which
# error_page turns into an internal GET of that file.
FAN_NS="1 10 100"
mkdir -p "$WORK/upstream"
FAN_LOCATIONS=
for n in $FAN_NS; do
  {
    printf '<?xml version="1.0" encoding="utf-8"?><schedule-response xmlns="urn:ietf:params:xml:ns:ischedule">'
    for i in $(seq "$n"); do
      printf '<response><recipient>mailto:user%03d@fan%s.test</recipient><request-status>2.0;Success</request-status></response>' "$i" "$n"
    done
    printf '</schedule-response>'
  } >"$WORK/upstream/fan-$n.xml"
  FAN_LOCATIONS+="
    location = /fan-$n {
      default_type application/xml;
      try_files /capabilities.xml =404;
      error_page 405 = /fan-$n.xml;
    }"
done
start_nginx upstream "
  server {
    listen 127.0.0.1:$UP_PORT;
    root $WORK/upstream;$FAN_LOCATIONS
    location ~ ^/fan-[0-9]+\.xml\$ {
      internal;
      default_type application/xml;
    }
    location = /ischedule {
      default_type application/xml;
      if (\$request_method = POST) {
        return 200 '$RESPONSE';
      }
      try_files /capabilities.xml =404;
    }
    location / {
      default_type application/xml;
      return 200 '$RESPONSE';
    }
  }"
start_nginx proxy "
  upstream origin { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"

# --- the bridges -------------------------------------------------------------
declare -A PORT PID LOGFILE
start_bridge() { # NAME RUST_LOG CONFIG-TAIL
  local dir=$WORK/$1 port
  mkdir -p "$dir"
  port=$(free_port)
  cat >"$dir/bridge.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$(free_port)"
# All of wrk's connections come from one address: the per-client cap
# (64 by default) would refuse most of them, and 1,000 is the total's default.
max_connections = 4000
max_connections_per_client = 4000
$3
EOF
  "$BIN" check --config "$dir/bridge.toml" >"$dir/check.out" 2>&1 ||
    die "the bridge refuses $dir/bridge.toml: $(cat "$dir/check.out")"
  (cd "$dir" && RUST_LOG=$2 exec taskset -c "$SERVER_CPU" "$BIN" serve --config bridge.toml) >"$dir/bridge.log" 2>&1 &
  PID[$1]=$!
  PIDS+=("$!")
  PORT[$1]=$port
  LOGFILE[$1]=$dir/bridge.log
  wait_for 20 curl -sf -o /dev/null "http://127.0.0.1:$port/.well-known/ischedule?action=capabilities" ||
    die "bridge $1 did not start: $(tail -20 "$dir/bridge.log")"
}
ROUTE="[[route]]
domain = \"$NATIVE\"
to = \"http://127.0.0.1:$UP_PORT/ischedule\""
start_bridge passthrough info "origin = \"http://127.0.0.1:$UP_PORT\""
start_bridge post-info info "$ROUTE"
start_bridge post-warn warn "$ROUTE"
# The upstream advertises what a bridge advertises: a valid document.
curl -sf -o "$WORK/upstream/capabilities.xml" \
  "http://127.0.0.1:${PORT[post-info]}/.well-known/ischedule?action=capabilities" ||
  die "no capabilities document from the bridge"
wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$UP_PORT/ischedule?action=capabilities" ||
  die "the upstream nginx did not start: $(cat "$WORK/nginx-upstream/logs/"*)"
wait_for 10 curl -sf -o /dev/null -d x "http://127.0.0.1:$PROXY_PORT/dav/" ||
  die "the proxy nginx did not start: $(cat "$WORK/nginx-proxy/logs/"*)"

BODY=$WORK/body.ics
make_body "$BODY" "$(recipients $NATIVE 1)"
recipients $NATIVE 1 >"$WORK/rcpt-native"
[ "$(wc -c <"$BODY")" -gt 0 ] || die "no body"

# --- wrk ---------------------------------------------------------------------
# run NAME CONNS URL RECIPIENTFILE BODY [lenient] -> $WORK/runs/NAME-CONNS-ROUND.out
# Any answer but 200 fails the benchmark, except with "lenient" (Cyrus,
# which answers some concurrent POSTs with 500: counted and shown instead).
RUN_ROUND=0
run() {
  local out=$WORK/runs/$1-$2-$RUN_ROUND.out
  mkdir -p "$WORK/runs"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$2" -d"${SECONDS_PER_RUN}s" --timeout 30s \
    -s "$REPO/bench/imip-post.lua" "$3" -- "$5" "$4" "$ORIGINATOR" >"$out" 2>&1 ||
    die "wrk failed: $(cat "$out")"
  local requests ok
  requests=$(field "$out" requests)
  ok=$(awk '$1 == "BENCH" && $2 == "code" && $3 == 200 {s += $4} END {print s + 0}' "$out")
  [ "$requests" -gt 0 ] && { [ "$ok" = "$requests" ] || [ "${6:-}" = lenient ]; } ||
    die "$1 at $2 connections: $ok of $requests answers were 200: $(cat "$out")"
  say "  round $RUN_ROUND $1 c=$2: $(rate "$out") req/s, p99 $(div "$(field "$out" p99_us)" 1000) ms"
}
field() { sed -n "s/^BENCH summary .*\b$2=\([0-9]*\).*/\1/p" "$1"; }
rate() { div "$(field "$1" requests)" "$(div "$(field "$1" duration_us)" 1000000 %.6f)" %.0f; }
# status FILE PREFIX: answers' request-status values starting with PREFIX
status_count() { awk -v p="$2" '$1 == "BENCH" && $2 == "status" && index($4, p) == 1 {s += $3} END {print s + 0}' "$1"; }
median() { # NAME CONNS FIELD-FUNCTION: median over the rounds
  local r f
  for r in $(seq "$ROUNDS"); do
    f=$WORK/runs/$1-$2-$r.out
    [ -f "$f" ] && "$3" "$f"
    echo
  done | awk 'NF' | sort -n | awk '{v[NR] = $1} END {if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
p99_ms() { div "$(field "$1" p99_us)" 1000; }
hwm() { mib "$(kb VmHWM "$1")"; }

declare -A URL RCPT
URL[direct]=http://127.0.0.1:$UP_PORT/dav/inbox
URL[proxy]=http://127.0.0.1:$PROXY_PORT/dav/inbox
URL[passthrough]=http://127.0.0.1:${PORT[passthrough]}/dav/inbox
URL[post-info]=http://127.0.0.1:${PORT[post-info]}/.well-known/ischedule
URL[post-warn]=http://127.0.0.1:${PORT[post-warn]}/.well-known/ischedule
ROWS="direct proxy passthrough post-info post-warn"
MANY_ROWS="proxy passthrough post-info"

declare -A HWM128
say "main table: $ROUNDS rounds of ${SECONDS_PER_RUN}s runs; servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
uptime_before=$(uptime)
for RUN_ROUND in $(seq "$ROUNDS"); do
  for c in $CONNS; do
    for row in $ROWS; do run "$row" "$c" "${URL[$row]}" "$WORK/rcpt-native" "$BODY"; done
  done
  if [ "$RUN_ROUND" = 1 ]; then
    for b in passthrough post-info post-warn; do HWM128[$b]=$(hwm "${PID[$b]}"); done
  fi
  if [ "$MANY" != 0 ]; then
    for row in $MANY_ROWS; do run "$row" "$MANY" "${URL[$row]}" "$WORK/rcpt-native" "$BODY"; done
  fi
done
# Every POST must have come back 2.0 from the receiver, not a bridge failure.
for f in "$WORK"/runs/post-*.out; do
  [ "$(status_count "$f" 2.0)" = "$(field "$f" requests)" ] ||
    die "$(basename "$f"): not every recipient got the receiver's 2.0: $(grep BENCH "$f")"
done

# --- Cyrus ---------------------------------------------------------------------
CYRUS_BASE=
bench_cleanup_hook() {
  [ -n "$CYRUS_BASE" ] && [ -f "$CYRUS_BASE/master.bgpid" ] || return 0
  kill "$(cat "$CYRUS_BASE/master.bgpid")" 2>/dev/null || true
  # master stops its children; wait for every process of this instance
  for _ in $(seq 100); do pgrep -f "$CYRUS_BASE/" >/dev/null || break; sleep 0.1; done
}
if [ "${BENCH_CYRUS:-1}" = 1 ]; then
  say "Cyrus: direct vs through the bridge"
  CY_DIR=$WORK/cyrus
  mkdir -p "$CY_DIR"
  # the cyrus user must reach its base folder
  chmod 711 "$WORK"
  CY_HTTP=$(free_port) CY_IMAP=$(free_port)
  CYRUS_BASE=$CY_DIR/base
  # Cyrus master signals its process group when it stops: a group of its own.
  CYRUS_DOMAIN=cyrus.test server setsid "$SHARED/peers/cyrus-ischedule.sh" \
    "$CYRUS_BASE" "$CY_HTTP" "$CY_IMAP" "$(free_port)" user001 </dev/null >"$CY_DIR/script.log" 2>&1 ||
    die "Cyrus did not start: $(cat "$CY_DIR/script.log")"
  wait_for 15 curl -sf -o /dev/null "http://127.0.0.1:$CY_HTTP/ischedule?action=capabilities" ||
    die "Cyrus does not answer: $(cat "$CY_DIR/script.log")"
  start_bridge cyrus-bridge info "[[route]]
domain = \"cyrus.test\"
to = \"http://127.0.0.1:$CY_HTTP/ischedule\""
  make_body "$WORK/body-cyrus.ics" mailto:user001@cyrus.test
  echo mailto:user001@cyrus.test >"$WORK/rcpt-cyrus"
  URL[cyrus-direct]=http://127.0.0.1:$CY_HTTP/ischedule
  URL[cyrus-bridge]=http://127.0.0.1:${PORT[cyrus-bridge]}/.well-known/ischedule
  for RUN_ROUND in $(seq "$ROUNDS"); do
    for row in cyrus-direct cyrus-bridge; do
      run "$row" 16 "${URL[$row]}" "$WORK/rcpt-cyrus" "$WORK/body-cyrus.ics" lenient
    done
  done
fi

# --- native fan-out: 1, 10, 100 recipients of one receiver -----------------------
if [ "${BENCH_NATIVE:-1}" = 1 ]; then
  say "native fan-out"
  fan_routes=
  for n in $FAN_NS; do
    fan_routes+="[[route]]
domain = \"fan$n.test\"
to = \"http://127.0.0.1:$UP_PORT/fan-$n\"
"
    # shellcheck disable=SC2046
    make_body "$WORK/body-fan-$n.ics" $(recipients "fan$n.test" "$n")
    recipients "fan$n.test" "$n" | paste -sd, - | sed 's/,/, /g' >"$WORK/rcpt-fan-$n"
  done
  start_bridge fanout info "$fan_routes"
  for RUN_ROUND in $(seq "$ROUNDS"); do
    for n in $FAN_NS; do
      run "fan-$n" 16 "http://127.0.0.1:${PORT[fanout]}/.well-known/ischedule" \
        "$WORK/rcpt-fan-$n" "$WORK/body-fan-$n.ics"
      f=$WORK/runs/fan-$n-16-$RUN_ROUND.out
      [ "$(status_count "$f" 2.0)" = "$(($(field "$f" requests) * n))" ] ||
        die "fan-out $n: not every recipient got the receiver's 2.0: $(grep BENCH "$f")"
    done
  done
fi

# --- iMIP in: LMTP -> native receiver ---------------------------------------------
if [ "${BENCH_LMTP:-1}" = 1 ]; then
  say "iMIP in over LMTP"
  LMTP_PORT=$(free_port)
  start_bridge lmtp info "[domains]
local = [\"example.com\"]
[mail]
lmtp_listen = \"127.0.0.1:$LMTP_PORT\"
local_clients = [\"127.0.0.1/32\"]
# one address, 16 sessions; each session sends mail after mail
max_connections_per_client = 100
max_commands = 1000000
[store]
path = \"state\"
$ROUTE"
  wait_for 10 python3 -c "import socket; socket.create_connection(('127.0.0.1', $LMTP_PORT)).close()" 2>/dev/null ||
    die "the LMTP listener did not start: $(tail -20 "${LOGFILE[lmtp]}")"
  # An organizer's invitation as a calendar client mails it; @ID@ becomes
  # a number per mail (its own Message-ID).
  {
    printf 'From: %s\r\nTo: user001@%s\r\nSubject: Invitation: Staff planning\r\n' "${ORIGINATOR#mailto:}" "$NATIVE"
    printf 'Date: %s\r\nMessage-ID: <lmtp-bench-@ID@@example.com>\r\nMIME-Version: 1.0\r\n' "$(date -uR)"
    printf 'Content-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n\r\n'
    cat "$BODY"
  } >"$WORK/invite.eml"
  for RUN_ROUND in $(seq "$ROUNDS"); do
    f=$WORK/runs/lmtp-16-$RUN_ROUND.out
    taskset -c "$CLIENT_CPU" python3 "$REPO/bench/lmtp-load.py" 127.0.0.1 "$LMTP_PORT" "$SECONDS_PER_RUN" 16 \
      "$WORK/invite.eml" "${ORIGINATOR#mailto:}" "user001@$NATIVE" >"$f" 2>&1 ||
      die "lmtp-load.py failed: $(cat "$f")"
    [ "$(awk '$1 == "BENCH" && $2 == "reply" && $3 == 250 {print $4}' "$f")" = "$(field "$f" requests)" ] ||
      die "LMTP in: not every mail was answered 250: $(grep BENCH "$f")"
    say "  round $RUN_ROUND lmtp c=16: $(rate "$f") mails/s"
  done
fi

# --- iMIP out into smtp-sink -----------------------------------------------------
IMIP_NS="1 10 100"
# Few connections: with 100 recipients each POST waits for 100 mails.
IMIP_CONNS=${BENCH_IMIP_CONNECTIONS:-4}
if [ "${BENCH_IMIP:-1}" = 1 ]; then
  say "iMIP out into smtp-sink"
  SINK_PORT=$(free_port)
  # It accepts and discards every mail; 1024: listen backlog. As root it
  # must be told which user to drop to.
  sink_user=()
  [ "$(id -u)" != 0 ] || sink_user=(-u nobody)
  # On wrk's core, not the bridge's: wrk sends a few POSTs a second here,
  # while the sink takes in every mail (on the bridge's core it took half
  # of that core, and the bridge was measured at half speed).
  taskset -c "$CLIENT_CPU" "$SMTP_SINK" "${sink_user[@]}" 127.0.0.1:"$SINK_PORT" 1024 >"$WORK/smtp-sink.log" 2>&1 &
  PIDS+=("$!")
  wait_for 10 python3 -c "import socket; socket.create_connection(('127.0.0.1', $SINK_PORT)).close()" 2>/dev/null ||
    die "smtp-sink did not start: $(cat "$WORK/smtp-sink.log")"
  start_bridge imip info "[[route]]
domain = \"mail.test\"
mode = \"imip-only\"
[limits]
max_recipients = 100
[smtp]
relay = \"smtp://127.0.0.1:$SINK_PORT\"
from = \"calendar-bridge@bridge.test\"
[store]
path = \"state\""
  for n in $IMIP_NS; do
    # shellcheck disable=SC2046
    make_body "$WORK/body-imip-$n.ics" $(recipients mail.test "$n")
    recipients mail.test "$n" | paste -sd, - | sed 's/,/, /g' >"$WORK/rcpt-imip-$n"
  done
  for RUN_ROUND in $(seq "$ROUNDS"); do
    for n in $IMIP_NS; do
      run "imip-$n" "$IMIP_CONNS" "${URL[post-info]%:*}:${PORT[imip]}/.well-known/ischedule" \
        "$WORK/rcpt-imip-$n" "$WORK/body-imip-$n.ics" lenient
    done
  done
fi
uptime_after=$(uptime)

# --- the table -------------------------------------------------------------------
verdict() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN {
  if (a == "n/a" || b == "n/a") { print "n/a"; exit }
  ok = (op == ">=") ? (a + 0 >= b + 0) : (a + 0 <= b + 0); print ok ? "met" : "NOT met" }'; }
label() {
  case $1 in
    direct) echo "nginx static upstream, direct" ;;
    proxy) echo "nginx reverse proxy -> upstream" ;;
    passthrough) echo "bridge pass-through (server.origin)" ;;
    post-info) echo "bridge POST, logs info (realistic)" ;;
    post-warn) echo "bridge POST, logs warn" ;;
  esac
}
set -- $CONNS
LOW=$1 HIGH=${2:-$1}
declare -A M
for row in $ROWS; do
  for c in $CONNS; do M[$row,$c]=$(median "$row" "$c" rate); done
  M[$row,p99]=$(median "$row" "$HIGH" p99_ms)
  [ "$MANY" != 0 ] && M[$row,many]=$(median "$row" "$MANY" rate)
done
ratio() { div "$1" "$2" %.2f; }

echo "ischedule-bridge vs nginx ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+changes'), $(date -u +%FT%TZ))"
echo "$(nproc) CPUs; servers on CPU $SERVER_CPU, wrk -t1 on CPU $CLIENT_CPU; $ROUNDS alternating rounds of ${SECONDS_PER_RUN} s, medians; body $(wc -c <"$BODY") bytes"
echo "load before: $uptime_before"
echo "load after:  $uptime_after"
echo
printf '| config | %s conns req/s | %s conns req/s | p99 @%s | ratio to nginx proxy (@%s / @%s) | %s conns req/s | peak RSS @%s / after %s |\n' \
  "$LOW" "$HIGH" "$HIGH" "$LOW" "$HIGH" "$MANY" "$HIGH" "$MANY"
echo '|---|---|---|---|---|---|---|'
for row in $ROWS; do
  rss="—"
  case $row in passthrough | post-*) rss="${HWM128[$row]} / $(hwm "${PID[$row]}") MiB" ;; esac
  r="—"
  [ "$row" != direct ] && [ "$row" != proxy ] &&
    r="$(ratio "${M[$row,$LOW]}" "${M[proxy,$LOW]}") / $(ratio "${M[$row,$HIGH]}" "${M[proxy,$HIGH]}")"
  [ "$row" = proxy ] && r="1.00"
  printf '| %s | %s | %s | %s ms | %s | %s | %s |\n' "$(label "$row")" "${M[$row,$LOW]}" \
    "${M[$row,$HIGH]}" "${M[$row,p99]}" "$r" "${M[$row,many]:-—}" "$rss"
done
if [ "${BENCH_CYRUS:-1}" = 1 ]; then
  CD=$(median cyrus-direct 16 rate) CB=$(median cyrus-bridge 16 rate)
  echo
  not200() { cat "$WORK"/runs/"$1"-16-*.out | awk '$1 == "BENCH" && $2 == "code" && $3 != 200 {s += $4} $1 == "BENCH" && $2 == "summary" {sub("requests=", "", $3); t += $3} END {printf "%d of %d", s, t}'; }
  echo "| Cyrus 3.6 receiver, 16 conns | req/s | p99 | answers not 200 (all rounds) |"
  echo '|---|---|---|---|'
  echo "| POST to Cyrus directly | $CD | $(median cyrus-direct 16 p99_ms) ms | $(not200 cyrus-direct) |"
  echo "| POST through the bridge (logs info) | $CB | $(median cyrus-bridge 16 p99_ms) ms | $(not200 cyrus-bridge) |"
fi
if [ "${BENCH_NATIVE:-1}" = 1 ]; then
  echo
  echo "| native fan-out to one receiver, 16 conns, logs info | POSTs/s | recipients/s (2.0) | µs of one core per recipient |"
  echo '|---|---|---|---|'
  for n in $FAN_NS; do
    M[fan,$n]=$(median "fan-$n" 16 rate)
    M[fanr,$n]=$(awk -v a="${M[fan,$n]}" -v n="$n" 'BEGIN {print a * n}')
    printf '| %s recipient(s) per POST | %s | %s | %s |\n' "$n" "${M[fan,$n]}" "${M[fanr,$n]}" \
      "$(div 1000000 "${M[fanr,$n]}" %.0f)"
  done
fi
if [ "${BENCH_LMTP:-1}" = 1 ]; then
  client_cpu() { sed -n 's/^BENCH summary .*client_cpu=\([0-9.]*\).*/\1/p' "$1"; }
  M[lmtp]=$(median lmtp 16 rate)
  echo
  echo "| iMIP in: LMTP -> native receiver, 16 conns, logs info | mails/s | replies, all rounds | load generator CPU (of one core) |"
  echo '|---|---|---|---|'
  echo "| 1 recipient per mail, local client | ${M[lmtp]} | $(cat "$WORK"/runs/lmtp-16-*.out | awk '$1 == "BENCH" && $2 == "reply" {c[$3] += $4} END {for (k in c) printf "%s x%d ", k, c[k]}')| $(for r in $(seq "$ROUNDS"); do client_cpu "$WORK/runs/lmtp-16-$r.out"; done | paste -sd/ -) |"
fi
if [ "${BENCH_IMIP:-1}" = 1 ]; then
  echo
  echo "| iMIP out into smtp-sink, $IMIP_CONNS conns, logs info | POSTs/s | mails/s (1.1 Sent) | µs of one core per mail | statuses, all rounds |"
  echo '|---|---|---|---|---|'
  # mails/s counts only recipients answered 1.1 (handed to the sink)
  sent_rate() { div "$(status_count "$1" 1.1)" "$(div "$(field "$1" duration_us)" 1000000 %.6f)" %.0f; }
  for n in $IMIP_NS; do
    M[imip,$n]=$(median "imip-$n" "$IMIP_CONNS" rate)
    M[mail,$n]=$(median "imip-$n" "$IMIP_CONNS" sent_rate)
    printf '| %s recipient(s) per POST | %s | %s | %s | %s |\n' "$n" "${M[imip,$n]}" \
      "${M[mail,$n]}" "$(div 1000000 "${M[mail,$n]}" %.0f)" \
      "$(cat "$WORK"/runs/imip-"$n"-*.out | awk '$1 == "BENCH" && $2 == "status" {c[$4] += $3} END {for (k in c) printf "%s x%d ", k, c[k]}')"
  done
fi

echo
echo "| goal | measured | verdict |"
echo '|---|---|---|'
g() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }
pt=$(ratio "${M[passthrough,$HIGH]}" "${M[proxy,$HIGH]}") ptl=$(ratio "${M[passthrough,$LOW]}" "${M[proxy,$LOW]}")
g "pass-through >= 0.7x nginx proxy" "$ptl @$LOW, $pt @$HIGH" "$(verdict "$(awk -v a="$pt" -v b="$ptl" 'BEGIN {print (a < b) ? a : b}')" ">=" 0.7)"
po=$(ratio "${M[post-info,$HIGH]}" "${M[proxy,$HIGH]}") pol=$(ratio "${M[post-info,$LOW]}" "${M[proxy,$LOW]}")
g "POST (logs info) >= 0.5x nginx proxy" "$pol @$LOW, $po @$HIGH" "$(verdict "$(awk -v a="$po" -v b="$pol" 'BEGIN {print (a < b) ? a : b}')" ">=" 0.5)"
g "POST p99 @$HIGH <= nginx proxy's" "${M[post-info,p99]} ms vs ${M[proxy,p99]} ms" "$(verdict "${M[post-info,p99]}" "<=" "${M[proxy,p99]}")"
if [ "${BENCH_CYRUS:-1}" = 1 ]; then
  cr=$(ratio "$CB" "$CD")
  g "through the bridge >= 0.95x Cyrus directly" "$cr" "$(verdict "$cr" ">=" 0.95)"
fi
if [ "$MANY" != 0 ]; then
  top=$(hwm "${PID[post-info]}")
  g "peak RSS <= 64 MiB with $MANY connections (POST bridge)" "$top MiB" "$(verdict "$top" "<=" 64)"
  for row in passthrough post-info; do
    mr=$(ratio "${M[$row,many]}" "${M[$row,$HIGH]}")
    g "$(label "$row"): req/s @$MANY >= 0.8x @$HIGH" "$mr" "$(verdict "$mr" ">=" 0.8)"
  done
fi
if [ "${BENCH_IMIP:-1}" = 1 ]; then
  g "iMIP out >= 5,000 mails/s (100 recipients per POST)" "${M[mail,100]}" "$(verdict "${M[mail,100]}" ">=" 5000)"
  lin=$(div "${M[mail,1]}" "${M[mail,100]}" %.2f)
  g "iMIP cost linear in recipients (cost per recipient at 100 / at 1)" "$lin" "$(verdict "$lin" "<=" 1.5)"
fi
if [ "${BENCH_NATIVE:-1}" = 1 ]; then
  lin=$(div "${M[fanr,1]}" "${M[fanr,100]}" %.2f)
  g "native cost linear in recipients (cost per recipient at 100 / at 1)" "$lin" "$(verdict "$lin" "<=" 1.5)"
fi
if [ "${BENCH_LMTP:-1}" = 1 ]; then
  g "iMIP in (LMTP -> native receiver) >= 2,000 mails/s" "${M[lmtp]}" "$(verdict "${M[lmtp]}" ">=" 2000)"
fi
echo
echo "ratio = req/s of the row / req/s of the nginx proxy at the same connections, this run"
echo "RSS = the bridge's VmHWM after round 1's $LOW/$HIGH-connection runs / at the end (after $MANY connections)"
