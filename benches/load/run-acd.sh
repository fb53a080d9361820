#!/usr/bin/env bash
# ACD under load: agent ready → offer sent, and enqueue → offer sent, from callgate's own histograms,
# while SIP load runs beside the queue. Loopback only; bounded in calls and time.
#
#   bash benches/load/run-acd.sh
#
# - callgate (release) on a copy of sip-profiles/default: no guidance, wrap-up 0 s (an agent is ready
#   again the moment a call ends, so every hang-up with callers waiting is an "agent ready → offer");
#   a bridge service 200 for the background load;
# - AGENTS baresip softphones (1001...) registered with digest, auto-answer;
# - queue callers: SIPp on 120 at QUEUE_CPS for QUEUE_CALLS calls, each staying HOLD_MS after the answer
#   (more arrive than the agents can take: a queue forms and every agent release is an offer);
# - background: SIPp → callgate B2BUA (service 200) → SIPp at LOAD_CPS for LOAD_CALLS calls.
# Prints the ready_to_offer and enqueue_to_offer quantiles (µs) from /metrics.
#
# Settings: AGENTS (default 4), QUEUE_CPS (6), QUEUE_CALLS (180), HOLD_MS (1500), LOAD_CPS (1000),
# LOAD_CALLS (30000), CALLGATE (default target/release/callgate, built if missing), OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
AGENTS=${AGENTS:-4}
QUEUE_CPS=${QUEUE_CPS:-6}
QUEUE_CALLS=${QUEUE_CALLS:-180}
HOLD_MS=${HOLD_MS:-1500}
LOAD_CPS=${LOAD_CPS:-1000}
LOAD_CALLS=${LOAD_CALLS:-30000}
OUT=${OUT:-$ROOT/target/load/acd-$(date -u +%Y%m%dT%H%M%SZ)}
CALLGATE=${CALLGATE:-$ROOT/target/release/callgate}
[ -x "$CALLGATE" ] || cargo build --release
mkdir -p "$OUT"
SIP=5690; HTTP=5691; UAS=5692; UAC=5693; UAC2=5694

# The profile.
P=$OUT/profile
rm -rf "$P"; cp -r sip-profiles/default "$P"
sed -i "s|^audio_dir = .*|audio_dir = \"$ROOT/audio\"|" "$P/callgate.toml"
sed -i 's/^guidance = \["guidance-ko"\]/guidance = []/; s/^wrapup = 10/wrapup = 0/' "$P/tenants/demo.toml"
cat >> "$P/tenants/demo.toml" <<EOF

[[service]]
number = "200"
name = "Bridge for the background load"
bridge_to = "sip:callee@127.0.0.1:$UAS"
EOF
sed -i 's/^numbers = \["120", "1200"\]/numbers = ["120", "1200", "200"]/' "$P/trunks.toml"
"$CALLGATE" check --profile "$P" > "$OUT/check.txt"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$CALLGATE" --profile "$P" --sip 127.0.0.1:$SIP --http 127.0.0.1:$HTTP --db "$OUT/calls.db" 2> "$OUT/callgate.err" &
pids+=($!)
for _ in $(seq 50); do grep -q "callgate ready" "$OUT/callgate.err" && break; sleep 0.1; done

# The agents' softphones.
for i in $(seq 1 "$AGENTS"); do
    ext=$((1000 + i)); d=$OUT/agent-$ext; mkdir -p "$d"
    base=$((21000 + 20 * i))
    cat > "$d/config" <<EOF
sip_listen 127.0.0.1:$base
net_interface 127.0.0.1
audio_source aufile,$ROOT/audio/music.wav
audio_player aufile,$d/played.wav
audio_alert aufile,$d/alert.wav
rtp_ports $((base + 6))-$((base + 19))
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module_tmp uuid.so
module_tmp account.so
EOF
    echo "<sip:$ext@127.0.0.1:$SIP;transport=udp>;auth_pass=demo$ext;regint=600;answermode=auto;audio_codecs=pcmu" > "$d/accounts"
    baresip -f "$d" > "$d/log" 2>&1 &
    pids+=($!)
done
sleep 3

# The background load's callee, then both callers.
sipp -sf "$ROOT/tests/sipp/uas_answer.xml" -i 127.0.0.1 -mi 127.0.0.1 -p $UAS -mp 24000 -cp 5695 -nostdin \
    > "$OUT/uas.out" 2>&1 &
pids+=($!)
sipp 127.0.0.1:$SIP -sf "$ROOT/tests/sipp/uac_b2bua.xml" -s 200 -key caller 0311112222 -i 127.0.0.1 -mi 127.0.0.1 \
    -p $UAC -mp 24100 -cp 5696 -r "$LOAD_CPS" -m "$LOAD_CALLS" -d 100 -l $((LOAD_CPS * 3 + 1000)) \
    -timeout 120s -timeout_error -nostdin -trace_stat -stf "$OUT/load-stat.csv" > "$OUT/load.out" 2>&1 &
loadpid=$!
sipp 127.0.0.1:$SIP -sf "$ROOT/tests/sipp/uac_patience.xml" -s 120 -key caller 0311112222 -i 127.0.0.1 -p $UAC2 \
    -mp 23000 -cp 5697 -r "$QUEUE_CPS" -m "$QUEUE_CALLS" -d "$HOLD_MS" -timeout 120s -timeout_error -nostdin > "$OUT/queue.out" 2>&1 || true
wait "$loadpid" && echo "background load: SIPp exit 0" || echo "background load: SIPp exit $?"

curl -s "127.0.0.1:$HTTP/metrics" > "$OUT/metrics.txt"
echo "==> $OUT"
grep -E 'callgate_setup_latency_quantile_seconds\{stage="(ready_to_offer|enqueue_to_offer|invite_to_200)"' "$OUT/metrics.txt" |
    awk '{ printf "%s %.0f µs\n", $1, $2 * 1e6 }'
grep -E 'callgate_setup_latency_seconds_count\{stage="(ready_to_offer|enqueue_to_offer)"' "$OUT/metrics.txt"
grep -E 'callgate_calls_total\{outcome="(completed|bridged|abandoned|failed|busy)"' "$OUT/metrics.txt"
