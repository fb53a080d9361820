#!/usr/bin/env bash
# The announcement bench: how many callers can hear the 13 s guidance at once. SIPp calls number
# 120 at RATE calls/s until CALLS calls are placed; each call hears the whole guidance (650 RTP
# packets of 20 ms) and callgate ends it with BYE, so about RATE x 13 streams run at once at the
# plateau. Reports, from callgate itself: the most streams at once, the pacer's send lateness
# (p50/p99/p99.9, from /metrics), RTP packets sent, and callgate's CPU during the plateau per 1,000
# streams; from SIPp: failed calls. Loopback only; bounded in calls and time. See benches/README.md.
#
#   bash benches/load/run-announce.sh                 # 400 calls/s, 8000 calls (about 5,200 streams)
#   RATE=100 CALLS=1500 bash benches/load/run-announce.sh   # a quick look (about 1,300 streams)
#   ECHO=0 bash benches/load/run-announce.sh          # callers send no RTP back
#   CALLGATE_MEDIA_THREADS=1 CALLGATE_MEDIA_RT=0 bash benches/load/run-announce.sh  # one media thread, normal scheduling
#
# By default SIPp echoes every RTP packet back (-rtp_echo), so each caller also sends 50 packets a
# second to callgate, as real callers do; callgate's media thread reads them (DTMF).
#
# The RTP goes to SIPp's media port, which SIPp reads and ignores, as a carrier's media gateway
# would take it; the kernel's loopback delivery of 50 packets/s per stream is part of the cost.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
RATE=${RATE:-400}
ECHO=${ECHO:-1}
CALLS=${CALLS:-8000}
OUT=${OUT:-$ROOT/target/load/announce-$(date -u +%Y%m%dT%H%M%SZ)}
CG_SIP=5190 CG_HTTP=8190 UAC_PORT=5191 UAC_CTRL=8991 UAC_MEDIA=17000
PROFILE=$ROOT/benches/load/announce-profile

log() { printf '==> %s\n' "$*" >&2; }
command -v sipp >/dev/null || { log "sipp is missing: apt-get install -y sip-tester"; exit 1; }
mkdir -p "$OUT"
log "results in $OUT"

CALLGATE=${CALLGATE:-}
if [ -z "$CALLGATE" ]; then
    log "building callgate (release)"
    cargo build --release --quiet --bin callgate
    CALLGATE=$ROOT/target/release/callgate
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$CALLGATE" --profile "$PROFILE" --db "$OUT/calls.db" >"$OUT/callgate.out" 2>"$OUT/callgate.err" &
CG=$!
PIDS+=("$CG")
for _ in $(seq 100); do grep -q "callgate ready" "$OUT/callgate.err" && break; sleep 0.1; done
grep -q "callgate ready" "$OUT/callgate.err" || { log "callgate did not start: $(tail -3 "$OUT/callgate.err")"; exit 1; }

metric() { # metric NAME [LABELS]: one value from /metrics
    curl -s "http://127.0.0.1:$CG_HTTP/metrics" | awk -v n="$1" -v l="${2:-}" \
        'index($0, n) == 1 && (l == "" || index($0, l)) && substr($0, length(n) + 1, 1) ~ /[ {]/ { if (!done) { print $NF; done = 1 } }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$CG/stat"; }
HZ=$(getconf CLK_TCK)

sipp "127.0.0.1:$CG_SIP" -sf "$ROOT/tests/sipp/uac_announcement.xml" -i 127.0.0.1 -mi 127.0.0.1 \
    -p "$UAC_PORT" -mp "$UAC_MEDIA" -ci 127.0.0.1 -cp "$UAC_CTRL" -s 120 -key caller 0212345678 \
    -key rtp_port "$UAC_MEDIA" -r "$RATE" -m "$CALLS" -l $((RATE * 20 + 1000)) \
    $([ "$ECHO" = 1 ] && echo -rtp_echo) -nostdin -timeout $((CALLS / RATE + 60))s -timeout_error -max_recv_loops 10000 -buff_size 16777216 \
    -trace_stat -stf "$OUT/uac-stat.csv" -fd 1 -trace_err -error_file "$OUT/uac-errors.log" \
    >"$OUT/uac.out" 2>&1 &
SIPP=$!
PIDS+=("$SIPP")

# Sample about once a second: streams at once (active calls), callgate's CPU ticks (whole process,
# and its media threads alone) and the wall time the sample took (the loop's own work under load
# makes a "second" longer). The plateau is every sample with at least 90% of the most streams seen.
media_ticks() { cat /proc/$CG/task/*/stat 2>/dev/null | awk '$2 ~ /callgate-(media|pacer)/ { t += $14 + $15 } END { print t + 0 }'; }
wall() { date +%s.%N; }
: >"$OUT/samples.tsv"
prev=$(cpu_ticks); prev_media=$(media_ticks); prev_t=$(wall)
while kill -0 "$SIPP" 2>/dev/null; do
    sleep 1
    now=$(cpu_ticks); now_media=$(media_ticks); now_t=$(wall)
    printf '%s\t%s\t%s\t%s\n' "$(metric callgate_active_calls)" "$((now - prev))" "$((now_media - prev_media))" \
        "$(awk -v a="$prev_t" -v b="$now_t" 'BEGIN { printf "%.3f", b - a }')" >>"$OUT/samples.tsv"
    prev=$now; prev_media=$now_media; prev_t=$now_t
done
wait "$SIPP" && SIPP_RC=0 || SIPP_RC=$?

peak=$(sort -n "$OUT/samples.tsv" | tail -1 | cut -f1)
plateau=$(awk -v p="$peak" -v hz="$HZ" '$1 >= 0.9 * p { n++; s += $1; c += $2; m += $3; t += $4 }
    END { if (n) printf "%d %.1f %.1f", s / n, 100 * c / hz / t, 100 * m / hz / t }' "$OUT/samples.tsv")
read -r streams cpu media_cpu <<<"$plateau"
per1000=$(awk -v c="$cpu" -v s="$streams" 'BEGIN { if (s) printf "%.1f", c / (s / 1000) }')
q() { awk -v v="$(metric callgate_media_send_lateness_quantile_seconds "quantile=\"$1\"")" 'BEGIN { printf "%.0f", v * 1e6 }'; }
sent=$(metric callgate_rtp_packets_sent_total)
failed=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "FailedCall(C)") f = i; next } { v = $f } END { print v + 0 }' "$OUT/uac-stat.csv")
lat="$(q 0.5) / $(q 0.99) / $(q 0.999)"
received=$(metric callgate_rtp_packets_received_total)
kill -TERM "$CG"; wait "$CG" || true

{
    echo "Caller RTP echoed back: $ECHO; RTP packets callgate received: $received"
    echo
    echo "| calls/s | calls | failed | most streams at once | plateau streams | callgate CPU at the plateau (media threads) | CPU per 1,000 streams | send lateness p50 / p99 / p99.9 (µs) | RTP packets sent |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    echo "| $RATE | $CALLS | $failed (sipp exit $SIPP_RC) | $peak | $streams | ${cpu}% of one core (${media_cpu}%) | ${per1000}% | $lat | $sent |"
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
} | tee "$OUT/results.md"
