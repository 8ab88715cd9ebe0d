#!/usr/bin/env bash
# iMIP throughput benchmark: iSchedule POSTs in, iMIP mail out.
#
#   bench/imip-throughput.sh
#
# Reports, for 1 and for 100 recipients per POST, the iMIP translations per
# second that reach a real SMTP sink (aiosmtpd, shared/peers/smtp-sink.py;
# counted as files in its Maildir, which is the ground truth) and the
# bridge's peak RSS (VmHWM, the bridge restarted for every run), each
# against baselines measured in the same run:
#
#   (a) the sink alone: the same number of messages, of the bridge's own
#       message (same bytes), sent straight to the sink by Python's smtplib
#       over one connection -> bridge mails/s / sink mails/s;
#   (b) the bridge without mail: the same POSTs with [imip] mode =
#       "native-only" (every recipient answers 5.3 after the same DNS
#       discovery, no mail) -> iMIP POSTs/s / native-only POSTs/s.
#
# Set-up, all on 127.0.0.1 and torn down on exit:
#   - dnsmasq, authoritative for bench.test (auth-zone): the recipients'
#     domain has no _ischedules._tcp SRV record, answered at once with
#     NXDOMAIN and the zone's SOA (as any real zone answers, so the bridge's
#     negative cache applies), and the bridge takes its production path,
#     native-then-imip: DNS discovery -> no receiver -> mail. It is not
#     imip-only, which would skip DNS. BENCH_DNS=local uses
#     `local=/bench.test/` instead: NXDOMAIN without SOA, which a resolver
#     cannot cache, so discovery asks dnsmasq again and again.
#   - the sink, a fresh Maildir per run;
#   - the release build of the bridge, relay = smtp://127.0.0.1:SINK,
#     max_recipients = 100, its state (redb: idempotency keys, queue) in a
#     fresh folder per run;
#   - load: wrk (bench/imip-post.lua), BENCH_CONNECTIONS connections from one
#     thread for BENCH_SECONDS per run; every request carries a distinct
#     iSchedule-Message-ID (so the bridge's idempotency record never answers
#     a repeat instead of sending mail, and each POST pays for recording its
#     answer, as a real sender's would).
#
# Environment (all optional):
#   BENCH_SECONDS=10        load per run
#   BENCH_CONNECTIONS=2     wrk connections (the reference machine has 2 cores,
#                           shared by wrk, the bridge, the sink and dnsmasq)
#   BENCH_MESSAGE_IDS=1     0: send no iSchedule-Message-ID header
#   BENCH_DNS=auth          or local (see above)
#   BENCH_KEEP=1            keep the work folder (logs, Maildirs) and print it
#   CARGO_TARGET_DIR        honoured for the build and the binary
#   BENCH_BIN               an existing bridge binary to run instead of building
#   ISCHEDULE_SHARED        the shared/ folder (default ../shared)
#
# Installs wrk, dnsmasq-base, curl, cmake (apt, scripts/ensure-packages) and
# aiosmtpd (pip) when missing. Speed is measured, not asserted: the script
# fails only when the set-up fails or no mail at all arrives.
set -euo pipefail
BENCH_NAME=imip-throughput
. "$(dirname "$0")/lib.sh"
bench_init
cd "$REPO"
SHARED=${ISCHEDULE_SHARED:-$REPO/../shared}
DURATION=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-2}
MESSAGE_IDS=${BENCH_MESSAGE_IDS:-1}
DNS_KIND=${BENCH_DNS:-auth}
DOMAIN=bench.test
ORIGINATOR=mailto:alice@example.com

[ -f "$SHARED/peers/smtp-sink.py" ] ||
  die "$SHARED/peers/smtp-sink.py is missing: check out shared/ next to the repo or set ISCHEDULE_SHARED"

# --- tools -----------------------------------------------------------------
scripts/ensure-packages cmake:cmake wrk:wrk dnsmasq-base:dnsmasq curl:curl
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  say "installing aiosmtpd (pip)"
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    python3 -m pip install -q aiosmtpd
fi
DNSMASQ=$(command -v dnsmasq || true)
[ -n "$DNSMASQ" ] || DNSMASQ=/usr/sbin/dnsmasq

build_bridge

# The Maildir's folders appear with its first message.
mail_count() { { find "$1/new" -type f 2>/dev/null || true; } | wc -l; }

# Waits until the Maildir stops growing (0.5 s unchanged, at most 10 s).
settle() {
  local dir=$1 last now
  last=$(mail_count "$dir")
  for _ in $(seq 20); do
    sleep 0.5
    now=$(mail_count "$dir")
    [ "$now" = "$last" ] && break
    last=$now
  done
  mail_count "$dir"
}

SINK_PID= SINK_PORT=
start_sink() { # MAILDIR (must not exist yet: Python's mailbox makes new/cur/tmp only then)
  SINK_PORT=$(free_port)
  python3 "$SHARED/peers/smtp-sink.py" "$SINK_PORT" "$1" >"$1.log" 2>&1 &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  wait_for 15 grep -q ready "$1.log" || die "the SMTP sink did not start: $(cat "$1.log")"
}

DNS_PORT=
start_dns() {
  DNS_PORT=$(free_port)
  cat >"$WORK/dnsmasq.conf" <<EOF
port=$DNS_PORT
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-daemon
pid-file=
log-queries
local=/example.com/
EOF
  if [ "$DNS_KIND" = local ]; then
    # NXDOMAIN without an SOA record: nothing a resolver may cache
    echo "local=/$DOMAIN/" >>"$WORK/dnsmasq.conf"
  else
    # authoritative: NXDOMAIN with the zone's SOA, as any real zone answers
    cat >>"$WORK/dnsmasq.conf" <<EOF
auth-server=ns.$DOMAIN,127.0.0.1
auth-zone=$DOMAIN
auth-soa=1,hostmaster.$DOMAIN,1200,120,1209600
auth-ttl=300
EOF
  fi
  "$DNSMASQ" --conf-file="$WORK/dnsmasq.conf" >"$WORK/dnsmasq.log" 2>&1 &
  PIDS+=("$!")
  local dns_pid=$!
  sleep 0.3
  kill -0 "$dns_pid" 2>/dev/null || die "dnsmasq did not start: $(cat "$WORK/dnsmasq.log")"
  wait_for 10 grep -q "started" "$WORK/dnsmasq.log" || die "dnsmasq did not start: $(cat "$WORK/dnsmasq.log")"
}
srv_queries() { grep -cE "(query|auth)\[SRV\]" "$WORK/dnsmasq.log" || true; }

BRIDGE_PID= BRIDGE_PORT= BRIDGE_LOG=
start_bridge() { # NAME MODE SINKPORT
  local dir=$WORK/$1
  mkdir -p "$dir"
  BRIDGE_PORT=$(free_port)
  BRIDGE_LOG=$dir/bridge.log
  cat >"$dir/bridge.toml" <<EOF
[server]
listen = "127.0.0.1:$BRIDGE_PORT"
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
[limits]
max_recipients = 100
[imip]
mode = "$2"
[smtp]
relay = "smtp://127.0.0.1:$3"
from = "calendar-bridge@bridge.test"
timeout_secs = 30
[store]
path = "state"
EOF
  "$BIN" check --config "$dir/bridge.toml" >/dev/null || die "the bridge refuses its configuration"
  RUST_LOG=${RUST_LOG:-info} "$BIN" serve --config "$dir/bridge.toml" >"$BRIDGE_LOG" 2>&1 &
  BRIDGE_PID=$!
  PIDS+=("$BRIDGE_PID")
  wait_for 20 curl -sf -o /dev/null "http://127.0.0.1:$BRIDGE_PORT/.well-known/ischedule?action=capabilities" ||
    die "the bridge did not start: $(tail -20 "$BRIDGE_LOG")"
}

# --- the POSTs -------------------------------------------------------------
# One iTIP REQUEST (RFC 5546) per scenario: alice@example.com invites N
# attendees user001..userN@bench.test; dates 30 days ahead.
make_request() { # N -> $WORK/body-N.ics, $WORK/recipients-N
  local n=$1 day i
  day=$(date -u -d '+30 days' +%Y%m%d)
  {
    printf 'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ischedule-bridge//bench//EN\r\nMETHOD:REQUEST\r\n'
    printf 'BEGIN:VEVENT\r\nUID:bench-%s-%s@example.com\r\nDTSTAMP:%sT090000Z\r\nSEQUENCE:0\r\n' "$n" "$$" "$(date -u +%Y%m%d)"
    printf 'DTSTART:%sT130000Z\r\nDTEND:%sT140000Z\r\n' "$day" "$day"
    printf 'SUMMARY:Quarterly planning\r\nLOCATION:Room 4\\, 2nd floor\r\n'
    printf 'DESCRIPTION:Agenda:\\n1. Budget\\n2. Hiring\\n3. Anything else\r\n'
    printf 'ORGANIZER;CN=Alice Example:mailto:alice@example.com\r\n'
    for i in $(seq "$n"); do
      printf 'ATTENDEE;CN=User %03d;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;ROLE=REQ-PARTICIPANT:mailto:user%03d@%s\r\n' "$i" "$i" "$DOMAIN"
    done
    printf 'END:VEVENT\r\nEND:VCALENDAR\r\n'
  } >"$WORK/body-$n.ics"
  for i in $(seq "$n"); do printf 'mailto:user%03d@%s\n' "$i" "$DOMAIN"; done |
    paste -sd, - | sed 's/,/, /g' >"$WORK/recipients-$n"
}

run_wrk() { # NAME N -> $WORK/NAME/wrk.out
  local prefix=
  [ "$MESSAGE_IDS" = 1 ] && prefix="bench-$1-$$-$(date +%s%N)"
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s -s "$REPO/bench/imip-post.lua" \
    "http://127.0.0.1:$BRIDGE_PORT/.well-known/ischedule" -- \
    "$WORK/body-$2.ics" "$WORK/recipients-$2" "$ORIGINATOR" "$prefix" >"$WORK/$1/wrk.out" 2>&1 ||
    die "wrk failed: $(cat "$WORK/$1/wrk.out")"
}
wrk_field() { # NAME KEY
  sed -n "s/^BENCH summary .*\b$2=\([0-9]*\).*/\1/p" "$WORK/$1/wrk.out"
}
wrk_code() { awk -v c="$2" '$1 == "BENCH" && $2 == "code" && $3 == c {s += $4} END {print s + 0}' "$WORK/$1/wrk.out"; }
wrk_status_total() { awk '$1 == "BENCH" && $2 == "status" {s += $3} END {print s + 0}' "$WORK/$1/wrk.out"; }
wrk_status() { awk -v p="$2" '$1 == "BENCH" && $2 == "status" && index($4, p) == 1 {s += $3} END {print s + 0}' "$WORK/$1/wrk.out"; }

# A few POSTs by curl after the load, to show the answers as they are.
sample_posts() { # NAME N
  local i code
  for i in 1 2 3; do
    code=$(curl -s -o "$WORK/$1/sample-$i.xml" -w '%{http_code}' \
      "http://127.0.0.1:$BRIDGE_PORT/.well-known/ischedule" \
      -H 'iSchedule-Version: 1.0' \
      -H "iSchedule-Message-ID: bench-sample-$1-$$-$i" \
      -H "Originator: $ORIGINATOR" \
      -H "Recipient: $(cat "$WORK/recipients-$2")" \
      -H 'Content-Type: text/calendar; component=VEVENT; method=REQUEST' \
      --data-binary "@$WORK/body-$2.ics")
    printf '    curl #%d: HTTP %s, statuses:' "$i" "$code"
    { grep -o '<request-status>[^<]*' "$WORK/$1/sample-$i.xml" || true; } | sed 's/<request-status>//' |
      sort | uniq -c | awk '{c = $1; $1 = ""; printf " %d x%s", c, $0} END {print ""}'
  done
  printf '    first answer: %s\n' "$(head -c 420 "$WORK/$1/sample-1.xml" | tr -d '\n')..."
}

# WARN/ERROR lines of the bridge log, counted by message (timestamps and
# Host headers taken out). A broken pipe at the very end is wrk hanging up on
# its last requests when its time is up.
log_problems() { # LOG
  local n
  n=$(grep -cE '^\S+ +(WARN|ERROR)\b' "$1" || true)
  printf '%s' "$n"
  [ "$n" = 0 ] && return
  { grep -E '^\S+ +(WARN|ERROR)\b' "$1" || true; } | cut -d' ' -f2- | sed -E 's/^ +//; s/, Host: .*//' |
    cut -c1-160 | sort | uniq -c | sort -rn | head -3 | awk '{printf " [%s]", $0}'
}

state_size() { du -sh "$WORK/$1/state" 2>/dev/null | cut -f1; }

# SMTP sessions between the bridge and the sink: closed ones in TIME-WAIT
# (the last minute, i.e. this run) and those still open.
smtp_sessions() { # SINKPORT
  command -v ss >/dev/null || { printf 'n/a (no ss)'; return; }
  printf '%d closed, %d open' \
    "$(ss -Htn state time-wait "( sport = :$1 or dport = :$1 )" | wc -l)" \
    "$(ss -Htn state established "( dport = :$1 )" | wc -l)"
}

print_wrk() { # NAME
  local name=$1 secs
  secs=$(div "$(wrk_field "$name" duration_us)" 1000000 %.2f)
  printf '    wrk: %s answers in %s s (%s sent), latency p50 %s ms p99 %s ms, errors: connect %s read %s write %s timeout %s\n' \
    "$(wrk_field "$name" requests)" "$secs" "$(wrk_field "$name" sent)" \
    "$(div "$(wrk_field "$name" p50_us)" 1000)" "$(div "$(wrk_field "$name" p99_us)" 1000)" \
    "$(wrk_field "$name" connect_errors)" "$(wrk_field "$name" read_errors)" \
    "$(wrk_field "$name" write_errors)" "$(wrk_field "$name" timeouts)"
  printf '    HTTP codes:'; awk '$1 == "BENCH" && $2 == "code" {printf " %s x%s", $3, $4} END {print ""}' "$WORK/$name/wrk.out"
  printf '    request-status counts:'
  awk '$1 == "BENCH" && $2 == "status" {$1 = ""; $2 = ""; c = $3; $3 = ""; sub(/^ +/, ""); printf " %d x %s;", c, $0} END {print ""}' \
    "$WORK/$name/wrk.out"
}

# --- runs ------------------------------------------------------------------
declare -A R
start_dns
say "dnsmasq on 127.0.0.1:$DNS_PORT; load: wrk -t1 -c$CONNECTIONS for ${DURATION}s per run; $(nproc) CPUs"
echo "ischedule-bridge iMIP throughput ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ))"
echo "load: wrk 1 thread, $CONNECTIONS connections, ${DURATION} s per run; iSchedule-Message-ID per request: $([ "$MESSAGE_IDS" = 1 ] && echo distinct || echo none)"
if [ "$DNS_KIND" = local ]; then
  echo "CPUs: $(nproc); DNS: dnsmasq local=/$DOMAIN/ (NXDOMAIN without SOA: not cacheable); mode native-then-imip vs native-only"
else
  echo "CPUs: $(nproc); DNS: dnsmasq authoritative for $DOMAIN (NXDOMAIN + SOA: cacheable); mode native-then-imip vs native-only"
fi

for n in 1 100; do
  make_request "$n"
  echo
  echo "== $n recipient(s) per POST (body $(wc -c <"$WORK/body-$n.ics") bytes) =="

  # 1. the bridge sending mail into the sink
  name=imip-$n
  start_sink "$WORK/$name-maildir"
  start_bridge "$name" native-then-imip "$SINK_PORT"
  idle_rss=$(kb VmRSS "$BRIDGE_PID")
  srv_before=$(srv_queries)
  before=$(mail_count "$WORK/$name-maildir")
  run_wrk "$name" "$n"
  at_end=$(mail_count "$WORK/$name-maildir")
  settled=$(settle "$WORK/$name-maildir")
  hwm=$(kb VmHWM "$BRIDGE_PID")
  srv_after=$(srv_queries)
  posts=$(wrk_field "$name" requests)
  secs=$(div "$(wrk_field "$name" duration_us)" 1000000 %.6f)
  R[$n,posts_s]=$(div "$posts" "$secs" %.2f)
  R[$n,mails]=$((at_end - before))
  R[$n,mails_s]=$(div "$((at_end - before))" "$secs")
  R[$n,ok]=$(div "$((100 * $(wrk_code "$name" 200)))" "$posts")
  R[$n,sent]=$(div "$((100 * $(wrk_status "$name" '1.1;')))" "$(wrk_status_total "$name")")
  R[$n,hwm]=$(mib "$hwm")
  echo "  iMIP (native-then-imip, relay to the sink):"
  print_wrk "$name"
  printf '    mails in the Maildir: %d during the load, %d once settled (answered POSTs x recipients = %d, 1.1 statuses = %d; the rest: POSTs in flight when wrk stopped)\n' \
    "$((at_end - before))" "$((settled - before))" "$((posts * n))" "$(wrk_status "$name" '1.1;')"
  printf '    DNS SRV queries answered by dnsmasq: %d; SMTP sessions to the sink: %s\n' \
    "$((srv_after - srv_before))" "$(smtp_sessions "$SINK_PORT")"
  printf '    bridge RSS: %s MiB idle, peak (VmHWM) %s MiB; state folder %s; WARN/ERROR log lines: %s\n' \
    "$(mib "$idle_rss")" "${R[$n,hwm]}" "$(state_size "$name")" "$(log_problems "$BRIDGE_LOG")"
  sample_posts "$name" "$n"
  stop "$BRIDGE_PID"
  sample=$(find "$WORK/$name-maildir/new" -type f -print -quit 2>/dev/null || true)
  [ -n "$sample" ] || die "no mail reached the sink; bridge log: $(tail -20 "$BRIDGE_LOG")"
  cp "$sample" "$WORK/sample-$n.eml"
  stop "$SINK_PID"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK/$name-maildir"

  # 2. baseline (a): the sink alone, the same number of the same message
  name=sink-$n
  start_sink "$WORK/$name-maildir"
  count=${R[$n,mails]}
  [ "$count" -gt 0 ] || count=1
  out=$(python3 "$REPO/bench/sink-baseline.py" "$SINK_PORT" "$WORK/sample-$n.eml" "$count" \
    "$((DURATION * 3))" "$DOMAIN" "$n")
  stored=$(mail_count "$WORK/$name-maildir")
  bsecs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$out")
  R[$n,sink_s]=$(div "$stored" "$bsecs")
  echo "  baseline (a), the sink alone (smtplib, one connection):"
  printf '    %s -> %d stored in %.2f s, message %s bytes\n' "$out" "$stored" "$bsecs" \
    "$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$out")"
  stop "$SINK_PID"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK/$name-maildir"

  # 3. baseline (b): the same POSTs without mail
  name=native-$n
  start_bridge "$name" native-only 9 # relay never used: every recipient answers 5.3
  srv_before=$(srv_queries)
  run_wrk "$name" "$n"
  hwm=$(kb VmHWM "$BRIDGE_PID")
  srv_after=$(srv_queries)
  posts=$(wrk_field "$name" requests)
  secs=$(div "$(wrk_field "$name" duration_us)" 1000000 %.6f)
  R[$n,native_s]=$(div "$posts" "$secs" %.2f)
  R[$n,native_hwm]=$(mib "$hwm")
  echo "  baseline (b), native-only (no mail, every recipient 5.3):"
  print_wrk "$name"
  printf '    DNS SRV queries answered by dnsmasq: %d\n' "$((srv_after - srv_before))"
  printf '    bridge peak RSS (VmHWM) %s MiB; state folder %s; WARN/ERROR log lines: %s\n' \
    "${R[$n,native_hwm]}" "$(state_size "$name")" "$(log_problems "$BRIDGE_LOG")"
  sample_posts "$name" "$n"
  stop "$BRIDGE_PID"
done

echo
echo "== summary (ratios against baselines measured in this run) =="
printf '%-11s %9s %9s %7s %7s | %11s %8s | %11s %8s | %9s %9s\n' \
  "recipients" "POSTs/s" "mails/s" "200 %" "1.1 %" "sink mail/s" "ratio a" \
  "native P/s" "ratio b" "RSS MiB" "native RSS"
for n in 1 100; do
  printf '%-11s %9s %9s %7s %7s | %11s %8s | %11s %8s | %9s %9s\n' \
    "$n" "${R[$n,posts_s]}" "${R[$n,mails_s]}" "${R[$n,ok]}" "${R[$n,sent]}" \
    "${R[$n,sink_s]}" "$(div "${R[$n,mails_s]}" "${R[$n,sink_s]}" %.3g)" \
    "${R[$n,native_s]}" "$(div "${R[$n,posts_s]}" "${R[$n,native_s]}" %.3g)" \
    "${R[$n,hwm]}" "${R[$n,native_hwm]}"
done
echo "mails/s: files added to the sink's Maildir/new while wrk ran, per second of load"
echo "ratio a = bridge mails/s / sink-alone mails/s; ratio b = iMIP POSTs/s / native-only POSTs/s"
echo "RSS: the bridge's VmHWM after the run (fresh process per run)"
