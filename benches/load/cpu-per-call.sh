#!/usr/bin/env bash
# callgate's CPU time per call, per thread, for one step of the load bench's calls: a cold start
# straight at RATE, STEP_S seconds of calls, then /proc/PID/task/*/stat before callgate stops.
# Less noisy than the load bench's pass/fail for comparing two builds: run them interleaved.
#
#   bash benches/load/cpu-per-call.sh [RATE] [STEP_S]      # default 4000 calls/s for 5 s
#   CALLGATE=/path/to/callgate bash benches/load/cpu-per-call.sh 4000
#
# Same loopback ports, profile and SIPp scenarios as run-load.sh (do not run both at once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
RATE=${1:-4000} STEP_S=${2:-5}
BIN=${CALLGATE:-}
if [ -z "$BIN" ]; then
    cargo build --release --bin callgate >&2
    BIN=$ROOT/target/release/callgate
fi
SCEN=$ROOT/tests/sipp
OUT=$(mktemp -d)
calls=$((RATE * STEP_S))
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    rm -rf "$OUT"
}
trap cleanup EXIT

sipp -sf "$SCEN/uas_answer.xml" -i 127.0.0.1 -mi 127.0.0.1 -p 5092 -mp 16010 -ci 127.0.0.1 -cp 8892 \
    -nostdin -timeout $((STEP_S * 4 + 60))s -max_recv_loops 10000 -max_sched_loops 10000 \
    -buff_size 16777216 >"$OUT/uas.out" 2>&1 &
UAS=$!
PIDS+=("$UAS")
"$BIN" --profile "$ROOT/benches/load/profile" --sip 127.0.0.1:5090 --http 127.0.0.1:8090 \
    --db "$OUT/cg.db" >"$OUT/cg.out" 2>"$OUT/cg.err" &
CG=$!
PIDS+=("$CG")
for _ in $(seq 200); do grep -q 'callgate ready' "$OUT/cg.err" && break; sleep 0.1; done
grep -q 'callgate ready' "$OUT/cg.err" || { echo "callgate did not start: $(tail -5 "$OUT/cg.err")" >&2; exit 1; }
rc=0
sipp 127.0.0.1:5090 -sf "$SCEN/uac_b2bua.xml" -i 127.0.0.1 -mi 127.0.0.1 -p 5091 -mp 16000 \
    -ci 127.0.0.1 -cp 8891 -s 200 -key caller 0311112222 -r "$RATE" -m "$calls" -d 100 \
    -l $((RATE * 3 + 1000)) -nostdin -timeout $((STEP_S * 3 + 20))s -timeout_error \
    -max_recv_loops 10000 -max_sched_loops 10000 -buff_size 16777216 \
    -trace_stat -stf "$OUT/stat.csv" -fd 1 >"$OUT/uac.out" 2>&1 || rc=$?
sleep 0.3
tck=$(getconf CLK_TCK)
total=0
for t in /proc/"$CG"/task/*; do
    read -r -a f < <(sed 's/.*) //' "$t/stat")
    ms=$(((f[11] + f[12]) * 1000 / tck))
    total=$((total + ms))
    [ "$ms" -ge 10 ] && printf '  thread %-20s %6d ms\n' "$(cat "$t/comm")" "$ms"
done
failed=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "FailedCall(C)") c = i; next } { l = $c } END { print l }' "$OUT/stat.csv")
echo "rate=$RATE calls=$calls sipp_exit=$rc failed=${failed:-?} callgate_cpu=${total}ms per_call=$(awk -v t="$total" -v n="$calls" 'BEGIN { printf "%.1f", t * 1000 / n }')us"
kill -TERM "$CG" 2>/dev/null || true
wait "$CG" 2>/dev/null || true
