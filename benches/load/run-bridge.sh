#!/usr/bin/env bash
# The bridge bench: CALLS simultaneous bridged calls relayed by callgate's media threads.
#
#   SIPp caller (this script's scenario, 127.0.0.1:5091, media 17000)
#     plays a 10 s A-law 1 kHz tone (500 RTP packets, 20 ms apart) again and again
#       └─> callgate 127.0.0.1:5090, benches/load/profile: number 200 bridge_to the callee
#             caller leg PCMA <-> agent leg PCMU (transcoded), latched, relayed both ways
#               └─> SIPp callee (tests/sipp/uas_answer.xml, 127.0.0.1:5092, media 18000, -rtp_echo)
#                     echoes every packet back, which callgate relays back to the caller
#
# So every packet the caller sends is relayed twice (caller -> callee, echo -> caller): with HOLD_S
# seconds per call and CALLS calls at once, callgate relays 2 x 50 x CALLS packets/s at the plateau
# (2,000 calls: 200,000 packets/s). Reports: calls at once, packets callgate received and sent
# (/metrics), the relayed share of what the caller sent (loss anywhere on the path: callgate, the
# kernel's socket buffers, SIPp's echo), UDP receive-buffer drops (/proc/net/snmp), callgate's CPU
# at the plateau (whole process and media threads) and SIPp's failed calls. Loopback only; bounded:
# RAMP_S seconds of ramp (CALLS / RAMP_S calls/s), HOLD_S seconds per call.
#
#   bash benches/load/run-bridge.sh                       # 1000 calls at once, 20 s each
#   CALLS=2000 bash benches/load/run-bridge.sh            # the issue's aim (200,000 packets/s)
#   CALLS=250 HOLD_S=10 bash benches/load/run-bridge.sh   # a quick look
#   CALLGATE_MEDIA_THREADS=1 CALLGATE_MEDIA_RT=0 bash benches/load/run-bridge.sh
#
# Needs the anchored bridge of the call core (a bridge_to service opens leg B and relays): with an
# older core callgate does not relay and the "relayed" column stays 0.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
CALLS=${CALLS:-1000}
HOLD_S=${HOLD_S:-20}
RAMP_S=${RAMP_S:-10}
OUT=${OUT:-$ROOT/target/load/bridge-$(date -u +%Y%m%dT%H%M%SZ)}
CG_SIP=5090 CG_HTTP=8090 UAC_PORT=5091 UAC_CTRL=8981 UAC_MEDIA=17000 UAS_PORT=5092 UAS_CTRL=8982 UAS_MEDIA=18000
PROFILE=$ROOT/benches/load/profile
RATE=$(( (CALLS + RAMP_S - 1) / RAMP_S ))
PLAYS=$(( (HOLD_S + 9) / 10 ))

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

# The caller's audio: 10 s of a 1 kHz tone in A-law, 500 packets 20 ms apart, as a pcap for SIPp.
python3 - "$OUT/tone-pcma.pcap" <<'PY'
import math, struct, sys
def alaw(x):
    sign = 0x80 if x >= 0 else 0
    if x < 0: x = -x - 1
    x = min(x >> 3, 0xFFF)
    if x < 32: v = x >> 1
    else:
        seg = x.bit_length() - 5
        v = (seg << 4) | ((x >> seg) & 0x0F)
    return (v | sign) ^ 0x55
out = open(sys.argv[1], "wb")
out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
for n in range(500):
    payload = bytes(alaw(int(8000 * math.sin(2 * math.pi * 1000 * (n * 160 + i) / 8000))) for i in range(160))
    rtp = struct.pack("!BBHII", 0x80, 8 | (0x80 if n == 0 else 0), n, n * 160, 0x5EED) + payload
    udp = struct.pack("!HHHH", 17000, 4000, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
    eth = b"\x00" * 12 + b"\x08\x00" + ip
    t = n * 0.020
    out.write(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)), len(eth), len(eth)) + eth)
PY

# The caller's scenario: the load bench's bridged call, offering PCMA first, playing the tone.
PLAY=""
for _ in $(seq "$PLAYS"); do
    PLAY+="  <nop><action><exec play_pcap_audio=\"$OUT/tone-pcma.pcap\"/></action></nop>
  <pause milliseconds=\"10000\"/>
"
done
sed -e 's|m=audio \[media_port\] RTP/AVP 0 8 101|m=audio [media_port] RTP/AVP 8 101|' \
    -e '/a=rtpmap:0 PCMU\/8000/d' \
    -e 's|<pause/>|@PLAY@|' "$ROOT/tests/sipp/uac_b2bua.xml" >"$OUT/uac_bridge.xml.in"
awk -v play="$PLAY" '{ if (index($0, "@PLAY@")) print play; else print }' "$OUT/uac_bridge.xml.in" >"$OUT/uac_bridge.xml"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$CALLGATE" --profile "$PROFILE" --sip "127.0.0.1:$CG_SIP" --http "127.0.0.1:$CG_HTTP" --db "$OUT/calls.db" \
    >"$OUT/callgate.out" 2>"$OUT/callgate.err" &
CG=$!
PIDS+=("$CG")
for _ in $(seq 100); do grep -q "callgate ready" "$OUT/callgate.err" && break; sleep 0.1; done
grep -q "callgate ready" "$OUT/callgate.err" || { log "callgate did not start: $(tail -3 "$OUT/callgate.err")"; exit 1; }

sipp -sf "$ROOT/tests/sipp/uas_answer.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$UAS_PORT" -mp "$UAS_MEDIA" \
    -cp "$UAS_CTRL" -rtp_echo -nostdin -max_recv_loops 10000 -buff_size 16777216 -trace_err \
    -error_file "$OUT/uas-errors.log" >"$OUT/uas.out" 2>&1 &
UAS=$!
PIDS+=("$UAS")

metric() { # metric NAME: one value from /metrics (the whole page is read: no SIGPIPE under pipefail)
    curl -s --max-time 5 "http://127.0.0.1:$CG_HTTP/metrics" | awk -v n="$1" \
        'index($0, n) == 1 && substr($0, length(n) + 1, 1) ~ /[ {]/ { if (!done) { print $NF; done = 1 } }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$CG/stat"; }
media_ticks() { cat /proc/$CG/task/*/stat 2>/dev/null | awk '$2 ~ /callgate-media/ { t += $14 + $15 } END { print t + 0 }'; }
udp() { awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else { for (i = 2; i <= NF; i++) if (k[i] == "'"$1"'") print $i } }' /proc/net/snmp; }
wall() { date +%s.%N; }
HZ=$(getconf CLK_TCK)
rcvbuf0=$(udp RcvbufErrors)

sipp "127.0.0.1:$CG_SIP" -sf "$OUT/uac_bridge.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$UAC_PORT" -mp "$UAC_MEDIA" \
    -cp "$UAC_CTRL" -s 200 -key caller 0212345678 -r "$RATE" -m "$CALLS" -l "$CALLS" \
    -nostdin -timeout $((RAMP_S + HOLD_S + 60))s -timeout_error -max_recv_loops 10000 -buff_size 16777216 \
    -trace_stat -stf "$OUT/uac-stat.csv" -fd 1 -trace_err -error_file "$OUT/uac-errors.log" \
    >"$OUT/uac.out" 2>&1 &
SIPP=$!
PIDS+=("$SIPP")

# Once a second: calls at once, packets received and sent by callgate, CPU (process, media threads).
: >"$OUT/samples.tsv"
prev=$(cpu_ticks); prev_media=$(media_ticks); prev_t=$(wall)
while kill -0 "$SIPP" 2>/dev/null; do
    sleep 1
    now=$(cpu_ticks); now_media=$(media_ticks); now_t=$(wall)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(metric callgate_active_calls)" "$((now - prev))" "$((now_media - prev_media))" \
        "$(awk -v a="$prev_t" -v b="$now_t" 'BEGIN { printf "%.3f", b - a }')" \
        "$(metric callgate_rtp_packets_received_total)" "$(metric callgate_rtp_packets_sent_total)" >>"$OUT/samples.tsv"
    prev=$now; prev_media=$now_media; prev_t=$now_t
done
wait "$SIPP" && SIPP_RC=0 || SIPP_RC=$?
sleep 1

peak=$(sort -n "$OUT/samples.tsv" | tail -1 | cut -f1)
# Plateau: samples with at least 90% of the most calls; packets/s from the counters' differences.
plateau=$(awk -v p="$peak" -v hz="$HZ" '
    NR > 1 && $1 >= 0.9 * p && prev_s != "" { n++; s += $1; c += $2; m += $3; t += $4; r += $5 - prev_r; o += $6 - prev_s }
    { prev_r = $5; prev_s = $6 }
    END { if (n && t > 0) printf "%d %.1f %.1f %.0f %.0f", s / n, 100 * c / hz / t, 100 * m / hz / t, r / t, o / t; else print "0 0 0 0 0" }' "$OUT/samples.tsv")
read -r calls cpu media_cpu rx_rate tx_rate <<<"$plateau"
received=$(metric callgate_rtp_packets_received_total)
sent=$(metric callgate_rtp_packets_sent_total)
rcvbuf=$(( $(udp RcvbufErrors) - rcvbuf0 ))
completed=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "SuccessfulCall(C)") f = i; next } { v = $f } END { print v + 0 }' "$OUT/uac-stat.csv")
failed=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "FailedCall(C)") f = i; next } { v = $f } END { print v + 0 }' "$OUT/uac-stat.csv")
kill -TERM "$CG"; wait "$CG" || true
# Each completed call's caller sent PLAYS x 500 packets; each is relayed twice when nothing is lost.
caller_sent=$((completed * PLAYS * 500))
share=$(awk -v s="$sent" -v c="$caller_sent" 'BEGIN { if (c) printf "%.2f", 100 * s / (2 * c); else print "-" }')

{
    echo "| calls at once | calls/s ramp | completed / failed | relayed packets/s at the plateau (received/s) | relayed of 2 x caller-sent | UDP rcvbuf drops | callgate CPU at the plateau (media threads) |"
    echo "|---:|---:|---|---:|---:|---:|---:|"
    echo "| $calls (of $CALLS) | $RATE | $completed / $failed (sipp exit $SIPP_RC) | $tx_rate ($rx_rate) | $share% ($sent of $((2 * caller_sent))) | $rcvbuf | ${cpu}% of one core (${media_cpu}%) |"
    echo
    echo "callgate received $received RTP packets and sent $sent; $PLAYS x 10 s of tone per call."
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
} | tee "$OUT/results.md"
