#!/usr/bin/env bash
# The load bench: SIPp caller -> callgate (B2BUA, service 200 bridged to a fixed destination)
# -> SIPp callee, at rising call rates; then the same two SIPp instances through Kamailio as a
# transaction-stateful proxy, as the reference. Reports, for each system, the highest rate with
# zero failed calls, callgate's own INVITE->100 / INVITE->200 p50/p99/p99.9 (from /metrics), and
# callgate's rate as a ratio to Kamailio's. Loopback only. See benches/README.md.
#
#   bash benches/load/run-load.sh                      # everything (about 5-10 minutes)
#   RATES="500 1000" STEP_S=3 bash benches/load/run-load.sh   # a quick look
#   ONLY=callgate bash benches/load/run-load.sh        # or ONLY=kamailio
#
# Settings (environment):
#   RATES     call rates to try, calls/s, ascending  (default "1000 2000 3000 ... 10000 12000")
#   STEP_S    seconds of calls per rate              (default 5: RATE*STEP_S calls per step)
#   HOLD_MS   how long each call stays up            (default 100)
#   ONLY      callgate | kamailio                    (default: both)
#   OUT       where the run's files go               (default target/load/RUN-TIMESTAMP)
#   CALLGATE  a callgate binary to use               (default: cargo build --release)
#   KAM_ARGS  extra kamailio options                 (default "-x tlsf -X tlsf": Debian's build
#             defaults to the debugging q_malloc allocator, which held Kamailio to ~1,000 calls/s
#             here; with TLSF it carried 8,000)
#
# Each step also reports the CPU steal during it (/proc/stat): on a VM whose host is busy, the
# figures are not comparable with a quiet run's.
#
# A step passes when SIPp ends with exit 0, no call failed, every call completed, and SIPp
# actually reached at least 90% of the target rate (on a saturated machine SIPp falls behind
# rather than failing calls). Escalation stops at the first failing step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

RATES=${RATES:-"1000 2000 3000 4000 5000 6000 7000 8000 9000 10000 12000"}
STEP_S=${STEP_S:-5}
HOLD_MS=${HOLD_MS:-100}
ONLY=${ONLY:-}
OUT=${OUT:-$ROOT/target/load/run-$(date -u +%Y%m%dT%H%M%SZ)}

# Loopback ports (fixed: the bench profile names the callee's).
CG_SIP=5090 CG_HTTP=8090 UAC_PORT=5091 UAS_PORT=5092 KAM_PORT=5094
UAC_CTRL=8891 UAS_CTRL=8892 UAC_MEDIA=16000 UAS_MEDIA=16010

SCEN=$ROOT/tests/sipp
PROFILE=$ROOT/benches/load/profile
KAM_CFG=$ROOT/benches/load/kamailio.cfg

log() { printf '==> %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for need in sipp:sip-tester kamailio:kamailio; do
    bin=${need%%:*}
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] ||
        die "$bin is missing: apt-get install -y ${need#*:}"
done
KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)

mkdir -p "$OUT"
log "results in $OUT"

# Processes this script started, by PID; stopped on exit.
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

stop_pid() { # stop_pid PID [SECONDS]: SIGTERM, wait, then SIGKILL
    local pid=$1 t=${2:-30} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "PID $pid did not stop within ${t}s of SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_udp() { # wait_udp PORT: until something listens on 127.0.0.1:PORT/udp
    local i
    for ((i = 0; i < 100; i++)); do
        ss -Huln "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

http_get() { # http_get PORT PATH
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&- 3>&-
}

# A sample from Prometheus text: metric NAME with every label in LABELS ("k=\"v\"" patterns).
prom() { # prom FILE NAME LABEL...
    local f=$1 name=$2
    shift 2
    awk -v name="$name" -v labels="$*" '
        $1 ~ "^"name"({|$)" {
            ok = 1; n = split(labels, want, " ")
            for (i = 1; i <= n; i++) if (index($1, want[i]) == 0) ok = 0
            if (ok) { print $2; exit }
        }' "$f"
}

us() { # seconds (text) -> microseconds, or "-"
    awk -v v="${1:-}" 'BEGIN { if (v == "" || v == "NaN") print "-"; else printf "%.0f", v * 1e6 }'
}

# A column of the last line of a SIPp -trace_stat CSV, by header name.
stat_col() { # stat_col FILE COLUMN
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
                           { last = $0 } END { split(last, f, ";"); print f[c] }' "$1"
}

# Elapsed "HH:MM:SS:uuuuuu" (SIPp) -> seconds.
secs() { awk -F: -v v="$1" 'BEGIN { split(v, t, ":"); printf "%.3f", t[1] * 3600 + t[2] * 60 + t[3] + t[4] / 1e6 }'; }

start_uas() { # start_uas TAG
    sipp -sf "$SCEN/uas_answer.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$UAS_PORT" -mp "$UAS_MEDIA" \
        -ci 127.0.0.1 -cp "$UAS_CTRL" -nostdin -timeout $((STEP_S * 4 + 60))s \
        -max_recv_loops 10000 -max_sched_loops 10000 -buff_size 16777216 \
        -trace_err -error_file "$OUT/$1-uas-errors.log" >"$OUT/$1-uas.out" 2>&1 &
    UAS_PID=$!
    PIDS+=("$UAS_PID")
    wait_udp "$UAS_PORT" || die "the SIPp callee did not start: $(tail -5 "$OUT/$1-uas.out")"
}

# UDP datagrams the kernel dropped because a receive buffer was full (all sockets).
udp_drops() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1; next } print $c; exit }' /proc/net/snmp; }

# "TOTAL STEAL" jiffies of all CPUs (/proc/stat, user..steal): steal is the time a VM's CPUs
# were ready to run but the host ran something else.
cpu_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9; exit }' /proc/stat; }

# One step of calls from the SIPp caller to 127.0.0.1:PORT; sets STEP_* variables.
run_uac() { # run_uac TAG PORT RATE
    local tag=$1 port=$2 rate=$3 calls=$(($3 * STEP_S)) rc=0 drops0 cpu0 cpu1
    drops0=$(udp_drops)
    cpu0=$(cpu_jiffies)
    sipp "127.0.0.1:$port" -sf "$SCEN/uac_b2bua.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$UAC_PORT" \
        -mp "$UAC_MEDIA" -ci 127.0.0.1 -cp "$UAC_CTRL" -s 200 -key caller 0311112222 \
        -r "$rate" -m "$calls" -d "$HOLD_MS" -l $((rate * 3 + 1000)) \
        -nostdin -timeout $((STEP_S * 3 + 20))s -timeout_error \
        -max_recv_loops 10000 -max_sched_loops 10000 -buff_size 16777216 \
        -trace_stat -stf "$OUT/$tag-uac-stat.csv" -fd 1 \
        -trace_err -error_file "$OUT/$tag-uac-errors.log" >"$OUT/$tag-uac.out" 2>&1 || rc=$?
    STEP_RC=$rc
    STEP_DROPS=$(($(udp_drops) - drops0))
    cpu1=$(cpu_jiffies)
    # Share of the machine's CPU time the host took away during the step (a noisy neighbour).
    STEP_STEAL=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[1] - x[1]; printf "%.0f%%", (t > 0) ? 100 * (y[2] - x[2]) / t : 0 }')
    STEP_CALLS=$calls
    STEP_OK=$(stat_col "$OUT/$tag-uac-stat.csv" 'SuccessfulCall(C)')
    STEP_FAILED=$(stat_col "$OUT/$tag-uac-stat.csv" 'FailedCall(C)')
    # Achieved rate: the calls over the time SIPp took to start them all, interpolated between
    # its once-a-second statistics rows (a timeout at the end does not dilute it).
    STEP_RATE=$(awk -F';' -v n="$calls" '
        function s(v,  t) { split(v, t, ":"); return t[1] * 3600 + t[2] * 60 + t[3] + t[4] / 1e6 }
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "ElapsedTime(C)") e = i; if ($i == "OutgoingCall(C)") o = i }; next }
        { t = s($e); c = $o
          if (c >= n && !done) { at = (c > pc) ? pt + (n - pc) / (c - pc) * (t - pt) : t; done = 1 }
          pt = t; pc = c }
        END { if (!done) at = pt; if (at <= 0) at = 1; printf "%.0f", (done ? n : pc) / at }' "$OUT/$tag-uac-stat.csv")
    STEP_RTD=$(awk -v s="$(secs "$(stat_col "$OUT/$tag-uac-stat.csv" 'ResponseTime1(C)')")" 'BEGIN { printf "%.2f ms", s * 1000 }')
    STEP_PASS=no
    if [ "$STEP_RC" -eq 0 ] && [ "${STEP_FAILED:-1}" -eq 0 ] && [ "${STEP_OK:-0}" -eq "$calls" ] &&
        awk -v a="$STEP_RATE" -v t="$rate" 'BEGIN { exit !(a >= 0.9 * t) }'; then
        STEP_PASS=yes
    fi
}

TABLE=$OUT/results.md
{
    echo "| system | target calls/s | achieved calls/s | calls | failed | pass | INVITE→100 p50 / p99 / p99.9 (µs) | INVITE→200 p50 / p99 / p99.9 (µs) | SIPp INVITE→200 avg | UDP drops | CPU steal |"
    echo "|---|---:|---:|---:|---:|---|---|---|---|---:|---:|"
} >"$TABLE"

row() { echo "| $1 | $2 | $STEP_RATE | $STEP_CALLS | ${STEP_FAILED:-?} | $STEP_PASS (sipp exit $STEP_RC) | $3 | $4 | ${STEP_RTD:-?} | $STEP_DROPS | ${STEP_STEAL:-?} |" >>"$TABLE"; }

CG_MAX=0
CG_LAT_100="-" CG_LAT_200="-"
bench_callgate() {
    local bin=${CALLGATE:-}
    if [ -z "$bin" ]; then
        log "building callgate (release)"
        cargo build --release --bin callgate >&2
        bin=$ROOT/target/release/callgate
    fi
    "$bin" check --profile "$PROFILE" >"$OUT/callgate-check.txt" || die "the bench profile is invalid: $(cat "$OUT/callgate-check.txt")"
    local rate
    for rate in $RATES; do
        local tag=callgate-$rate
        log "callgate: $rate calls/s for ${STEP_S}s"
        start_uas "$tag"
        "$bin" --profile "$PROFILE" --sip "127.0.0.1:$CG_SIP" --http "127.0.0.1:$CG_HTTP" \
            --db "$OUT/$tag.db" >"$OUT/$tag-callgate.out" 2>"$OUT/$tag-callgate.err" &
        local cg=$!
        PIDS+=("$cg")
        local i
        for ((i = 0; i < 200; i++)); do
            grep -q 'callgate ready' "$OUT/$tag-callgate.err" && break
            kill -0 "$cg" 2>/dev/null || die "callgate exited at start: $(tail -20 "$OUT/$tag-callgate.err")"
            sleep 0.1
        done
        grep -q 'callgate ready' "$OUT/$tag-callgate.err" || die "callgate not ready in 20 s: $(tail -20 "$OUT/$tag-callgate.err")"

        run_uac "$tag" "$CG_SIP" "$rate"
        sleep 0.5
        http_get "$CG_HTTP" /metrics >"$OUT/$tag-metrics.txt" || true
        local q s l100="" l200=""
        for s in invite_to_100 invite_to_200; do
            l=""
            for q in 0.5 0.99 0.999; do
                l="$l${l:+ / }$(us "$(prom "$OUT/$tag-metrics.txt" callgate_setup_latency_quantile_seconds "stage=\"$s\"" "quantile=\"$q\"")")"
            done
            if [ "$s" = invite_to_100 ]; then l100=$l; else l200=$l; fi
        done
        stop_pid "$cg" 60
        stop_pid "$UAS_PID" 5
        row callgate "$rate" "$l100" "$l200"
        if [ "$STEP_PASS" = yes ]; then
            CG_MAX=$rate CG_LAT_100=$l100 CG_LAT_200=$l200
        else
            log "callgate: $rate calls/s failed (sipp exit $STEP_RC, failed ${STEP_FAILED:-?}, achieved $STEP_RATE/s): stopping"
            break
        fi
        sleep 1
    done
}

KAM_MAX=0
bench_kamailio() {
    "$KAMAILIO" -c -f "$KAM_CFG" >"$OUT/kamailio-check.txt" 2>&1 || die "kamailio.cfg is invalid: $(tail -5 "$OUT/kamailio-check.txt")"
    local rate
    for rate in $RATES; do
        local tag=kamailio-$rate
        log "kamailio: $rate calls/s for ${STEP_S}s"
        start_uas "$tag"
        mkdir -p "$OUT/kamailio-run"
        "$KAMAILIO" -f "$KAM_CFG" -DD -E -m 1024 -M 32 ${KAM_ARGS:--x tlsf -X tlsf} -Y "$OUT/kamailio-run" -w "$OUT/kamailio-run" \
            -A "KAM_LISTEN=udp:127.0.0.1:$KAM_PORT" -A "KAM_CALLEE=\"sip:127.0.0.1:$UAS_PORT\"" \
            >"$OUT/$tag-kamailio.log" 2>&1 &
        local kam=$!
        PIDS+=("$kam")
        wait_udp "$KAM_PORT" || die "kamailio did not start: $(tail -20 "$OUT/$tag-kamailio.log")"
        run_uac "$tag" "$KAM_PORT" "$rate"
        stop_pid "$kam" 10
        stop_pid "$UAS_PID" 5
        row kamailio "$rate" "n/a" "n/a"
        if [ "$STEP_PASS" = yes ]; then
            KAM_MAX=$rate
        else
            log "kamailio: $rate calls/s failed (sipp exit $STEP_RC, failed ${STEP_FAILED:-?}, achieved $STEP_RATE/s): stopping"
            break
        fi
        sleep 1
    done
}

[ "$ONLY" = kamailio ] || bench_callgate
[ "$ONLY" = callgate ] || bench_kamailio

{
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)"
    echo "Peers: $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1), $("$KAMAILIO" -v 2>&1 | head -1)"
    echo "Steps: $STEP_S s of calls per rate, calls held $HOLD_MS ms, SIPp caller and callee on the same cores."
    echo
    echo "| | highest rate with zero failed calls | INVITE→100 p50 / p99 / p99.9 (µs) | INVITE→200 p50 / p99 / p99.9 (µs) |"
    echo "|---|---:|---|---|"
    [ "$ONLY" = kamailio ] || echo "| callgate (B2BUA) | $CG_MAX calls/s | $CG_LAT_100 | $CG_LAT_200 |"
    [ "$ONLY" = callgate ] || echo "| Kamailio (stateful proxy) | $KAM_MAX calls/s | | |"
    if [ -z "$ONLY" ]; then
        if [ "$KAM_MAX" -gt 0 ]; then
            echo
            echo "callgate / Kamailio: $(awk -v a="$CG_MAX" -v b="$KAM_MAX" 'BEGIN { printf "%.2f", a / b }')"
        fi
    fi
    last=${RATES##* }
    if { [ "$ONLY" != kamailio ] && [ "$CG_MAX" = "$last" ]; } || { [ "$ONLY" != callgate ] && [ "$KAM_MAX" = "$last" ]; }; then
        echo
        echo "(A system passed the highest rate tried ($last/s): its limit is higher; add rates to RATES.)"
    fi
} >>"$TABLE"

echo
cat "$TABLE"
