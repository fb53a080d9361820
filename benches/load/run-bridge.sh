#!/usr/bin/env bash
# The bridge bench: CALLS simultaneous bridged calls relayed by callgate's media threads.
#
#   SIPp caller (signalling only, 127.0.0.1:5091): INVITE whose SDP names the blaster's port
#   blaster (C, built here with cc, 127.0.0.1:16000): for every call, 50 RTP packets/s of an A-law
#     1 kHz tone (172 bytes) to the port callgate answered with (SIPp logs it), batched per 1 ms
#     slot with sendmmsg; counts the packets that come back
#       └─> callgate 127.0.0.1:5090, benches/load/profile: number 200 bridge_to the callee
#             caller leg PCMA <-> agent leg PCMU (transcoded), latched, relayed both ways
#               └─> SIPp callee (tests/sipp/uas_answer.xml, 127.0.0.1:5092, media 18000, -rtp_echo)
#                     echoes every packet back, which callgate relays back to the blaster
#
# Every packet the blaster sends is relayed twice (caller -> callee, echo -> caller): with CALLS
# calls at once callgate relays 2 x 50 x CALLS packets/s (2,000 calls: 200,000 packets/s). Loss is
# counted end to end (sent by the blaster vs. came back to it) and at callgate (/metrics: received
# vs. sent). Reports: calls at once, relayed packets/s at the plateau, loss, UDP receive-buffer
# drops (/proc/net/snmp, the whole machine), callgate's CPU at the plateau (process and media
# threads), SIPp's failed calls. Loopback only; bounded: RAMP_S seconds of ramp, HOLD_S per call.
# (SIPp's own RTP players take a thread per call and could not keep 2 x 50 packets/s per call at
# these numbers on 2 cores, hence the blaster.)
#
#   bash benches/load/run-bridge.sh                       # 1000 calls at once, 20 s each
#   CALLS=2000 bash benches/load/run-bridge.sh            # the issue's aim (200,000 packets/s)
#   CALLS=250 HOLD_S=10 bash benches/load/run-bridge.sh   # a quick look
#   CALLGATE_MEDIA_THREADS=1 CALLGATE_MEDIA_RT=0 bash benches/load/run-bridge.sh
#
# Needs the call core's anchored bridge (a bridge_to service opens leg B and relays) and a C
# compiler (cc).
#
# The reference: SYSTEM=rtpengine runs rtpengine (Debian rtpengine-daemon, userspace only:
# --table=-1, 2 worker threads) in callgate's place, the same blaster and SIPp echo, with each call
# set up by an offer/answer over its ng control protocol (no SIP; both legs PCMA, so rtpengine does
# not transcode where callgate does).
#   SYSTEM=rtpengine CALLS=1000 bash benches/load/run-bridge.sh
#
# RMEM_DEFAULT=BYTES (root) sets net.core.rmem_default for the run and restores it after: SIPp's echo
# takes every call's packets on ONE socket whose receive buffer is the system default (212,992 bytes;
# its -rtp_buffsize does not reach that socket), so at 2,000 calls the bench can lose packets in the
# load generator's own socket, which a real centre (a phone per agent) never concentrates.
#   CALLS=2000 RMEM_DEFAULT=4194304 bash benches/load/run-bridge.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
CALLS=${CALLS:-1000}
SYSTEM=${SYSTEM:-callgate}
ECHO=${ECHO:-sipp}
HOLD_S=${HOLD_S:-20}
RAMP_S=${RAMP_S:-10}
OUT=${OUT:-$ROOT/target/load/bridge-$(date -u +%Y%m%dT%H%M%SZ)}
CG_SIP=5090 CG_HTTP=8090 RTPE_CLI=9900 UAC_PORT=5091 UAC_CTRL=8981 UAC_MEDIA=17000 UAS_PORT=5092 UAS_CTRL=8982 UAS_MEDIA=18000
ECHO_PORT=$UAS_MEDIA
[ "$ECHO" = sipp ] || ECHO_PORT=18100
PROFILE=$ROOT/benches/load/profile
RATE=$(( (CALLS + RAMP_S - 1) / RAMP_S ))

log() { printf '==> %s\n' "$*" >&2; }
if [ -n "${RMEM_DEFAULT:-}" ]; then
    RMEM_WAS=$(sysctl -n net.core.rmem_default)
    sysctl -qw net.core.rmem_default="$RMEM_DEFAULT"
    log "net.core.rmem_default $RMEM_WAS -> $RMEM_DEFAULT for this run"
fi
command -v sipp >/dev/null || { log "sipp is missing: apt-get install -y sip-tester"; exit 1; }
mkdir -p "$OUT"
log "results in $OUT"

CALLGATE=${CALLGATE:-}
if [ "$SYSTEM" = callgate ] && [ -z "$CALLGATE" ]; then
    log "building callgate (release)"
    cargo build --release --quiet --bin callgate
    CALLGATE=$ROOT/target/release/callgate
fi

BLAST_PORT=16000
cc -O2 -o "$OUT/blaster" -x c - -lm <<'C'
/* The bridge bench's callers' media: one UDP socket sends 50 RTP packets/s (A-law 1 kHz, 172 bytes)
 * to every port callgate answered with (read from SIPp's log as "AUDIOPORT <port>"), for HOLD_MS,
 * batched with sendmmsg per 1 ms slot; it counts the packets that come back (the callee echoes them
 * and callgate relays them back). It starts at most RATE new streams a second (the calls' ramp).
 * Usage: blaster LOG LOCAL_PORT HOLD_MS RUN_S [RATE] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define MAXS 20000
struct stream { int port; long start_ms, next_ms, end_ms; unsigned short seq; unsigned ts; };
static struct stream st[MAXS];
static int ns;
static long now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000L + t.tv_nsec / 1000000; }
static unsigned char alaw(int x) {
    int sign = x >= 0 ? 0x80 : 0, v;
    if (x < 0) x = -x - 1;
    x >>= 3; if (x > 0xFFF) x = 0xFFF;
    if (x < 32) v = x >> 1; else { int seg = 31 - __builtin_clz(x) - 4; v = (seg << 4) | ((x >> seg) & 0x0F); }
    return (v | sign) ^ 0x55;
}
int main(int argc, char **argv) {
    if (argc < 5) return 2;
    FILE *log = NULL; long off = 0;
    int hold = atoi(argv[3]); long run_ms = atol(argv[4]) * 1000L;
    long rate = argc > 5 ? atol(argv[5]) : 0, first_ms = 0;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int big = 8 << 20; setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, 4); setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, 4);
    struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    me.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(s, (void *)&me, sizeof me)) { perror("bind"); return 1; }
    unsigned char payload[160];
    for (int i = 0; i < 160; i++) payload[i] = alaw((int)(8000 * sin(2 * M_PI * 1000 * i / 8000.0)));
    static unsigned char pkts[1024][172]; static struct sockaddr_in dst[1024]; static struct iovec iov[1024]; static struct mmsghdr mm[1024];
    static unsigned char rbuf[64][256]; static struct iovec riov[64]; static struct mmsghdr rm[64];
    for (int i = 0; i < 64; i++) { riov[i].iov_base = rbuf[i]; riov[i].iov_len = 256; rm[i].msg_hdr.msg_iov = &riov[i]; rm[i].msg_hdr.msg_iovlen = 1; }
    long sent = 0, recvd = 0, t0 = now_ms(), last_poll = 0, errors = 0;
    char line[512];
    for (long tick = t0;; tick++) {
        struct timespec due = { tick / 1000, (tick % 1000) * 1000000 };
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
        long now = now_ms();
        if (now - t0 > run_ms) break;
        if (now - last_poll >= 50) { /* new calls */
            last_poll = now;
            if (!log) log = fopen(argv[1], "r");
            if (log) {
                fseek(log, off, SEEK_SET);
                /* at most RATE new streams a second (argv[5]; 0: no limit), counted from the first */
                while ((rate <= 0 || ns < 1 + (now - first_ms) * rate / 1000) && fgets(line, sizeof line, log)) {
                    if (line[strlen(line) - 1] != '\n') break; /* a partial line: read it next time */
                    off = ftell(log);
                    char *p = strstr(line, "AUDIOPORT ");
                    if (p && ns < MAXS) {
                        if (ns == 0) first_ms = now;
                        struct stream *x = &st[ns++];
                        x->port = atoi(p + 10); x->start_ms = now; x->next_ms = now + (ns % 20); x->end_ms = now + hold;
                        x->seq = ns * 7; x->ts = ns * 1000;
                    }
                }
                clearerr(log);
            }
        }
        int n = 0;
        for (int i = 0; i < ns; i++) {
            struct stream *x = &st[i];
            if (x->next_ms > now || x->next_ms >= x->end_ms) continue;
            while (x->next_ms <= now) x->next_ms += 20;
            unsigned char *p = pkts[n];
            p[0] = 0x80; p[1] = 8; p[2] = x->seq >> 8; p[3] = x->seq; x->seq++;
            p[4] = x->ts >> 24; p[5] = x->ts >> 16; p[6] = x->ts >> 8; p[7] = x->ts; x->ts += 160;
            unsigned ssrc = 0x10000 + i; p[8] = ssrc >> 24; p[9] = ssrc >> 16; p[10] = ssrc >> 8; p[11] = ssrc;
            memcpy(p + 12, payload, 160);
            dst[n] = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(x->port) }; dst[n].sin_addr.s_addr = htonl(0x7f000001);
            iov[n].iov_base = p; iov[n].iov_len = 172;
            memset(&mm[n], 0, sizeof mm[n]); mm[n].msg_hdr.msg_iov = &iov[n]; mm[n].msg_hdr.msg_iovlen = 1;
            mm[n].msg_hdr.msg_name = &dst[n]; mm[n].msg_hdr.msg_namelen = sizeof dst[n];
            if (++n == 1024) break;
        }
        for (int k = 0; k < n;) { int r = sendmmsg(s, mm + k, n - k, 0); if (r <= 0) { errors++; k++; } else { sent += r; k += r; } }
        for (;;) { int r = recvmmsg(s, rm, 64, MSG_DONTWAIT, NULL); if (r <= 0) break; recvd += r; }
    }
    for (;;) { int r = recvmmsg(s, rm, 64, MSG_DONTWAIT, NULL); if (r <= 0) break; recvd += r; }
    printf("streams %d sent %ld received %ld send_errors %ld\n", ns, sent, recvd, errors);
    return 0;
}
C

# ECHO=batched: the agents' phones' echo as a small C program instead of SIPp's -rtp_echo thread
# (recvfrom + sendto per packet): every datagram back to its sender, 64 at a time with recvmmsg /
# sendmmsg, an 8 MB receive buffer (SO_RCVBUFFORCE as root). Usage: echo PORT
cc -O2 -o "$OUT/echo" -x c - <<'C'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0), big = 8 << 20;
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big)) setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    me.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(s, (void *)&me, sizeof me)) { perror("bind"); return 1; }
    static unsigned char buf[64][2048]; static struct sockaddr_in from[64]; static struct iovec iov[64]; static struct mmsghdr m[64];
    for (;;) {
        for (int i = 0; i < 64; i++) {
            iov[i].iov_base = buf[i]; iov[i].iov_len = sizeof buf[i];
            memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
            m[i].msg_hdr.msg_iov = &iov[i]; m[i].msg_hdr.msg_iovlen = 1;
            m[i].msg_hdr.msg_name = &from[i]; m[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(s, m, 64, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) iov[i].iov_len = m[i].msg_len;
        for (int k = 0; k < n;) { int r = sendmmsg(s, m + k, n - k, 0); k += r > 0 ? r : 1; }
    }
}
C

# The caller's scenario: the load bench's bridged call, offering PCMA at the blaster's port and
# logging the port callgate answered with.
sed -e 's|m=audio \[media_port\] RTP/AVP 0 8 101|m=audio '"$BLAST_PORT"' RTP/AVP 8 101|' \
    -e '/a=rtpmap:0 PCMU\/8000/d' \
    -e 's|<recv response="200" rtd="true" rrs="true" response_txn="invite"/>|<recv response="200" rtd="true" rrs="true" response_txn="invite"><action><ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="mline,aport"/><log message="AUDIOPORT [$aport] [$mline]"/></action></recv>|' \
    "$ROOT/tests/sipp/uac_b2bua.xml" >"$OUT/uac_bridge.xml"
grep -q AUDIOPORT "$OUT/uac_bridge.xml" || { log "could not build the caller scenario"; exit 1; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "${RMEM_WAS:-}" ]; then sysctl -qw net.core.rmem_default="$RMEM_WAS"; fi
}
trap cleanup EXIT

if [ "$SYSTEM" = callgate ]; then
    "$CALLGATE" --profile "$PROFILE" --sip "127.0.0.1:$CG_SIP" --http "127.0.0.1:$CG_HTTP" --db "$OUT/calls.db" \
        >"$OUT/callgate.out" 2>"$OUT/callgate.err" &
    CG=$!
    PIDS+=("$CG")
    for _ in $(seq 100); do grep -q "callgate ready" "$OUT/callgate.err" && break; sleep 0.1; done
    grep -q "callgate ready" "$OUT/callgate.err" || { log "callgate did not start: $(tail -3 "$OUT/callgate.err")"; exit 1; }
else
    command -v rtpengine >/dev/null || { log "rtpengine is missing: apt-get install -y --no-install-recommends rtpengine-daemon"; exit 1; }
    rtpengine --interface=127.0.0.1 --listen-ng=127.0.0.1:2223 --listen-cli=127.0.0.1:$RTPE_CLI --port-min=30000 --port-max=39999 --table=-1 \
        --foreground --log-stderr --log-level=${RTPE_LOG_LEVEL:-4} --num-threads=2 >"$OUT/rtpengine.out" 2>"$OUT/rtpengine.err" &
    CG=$!
    PIDS+=("$CG")
    sleep 1
    kill -0 "$CG" || { log "rtpengine did not start: $(tail -3 "$OUT/rtpengine.err")"; exit 1; }
fi

if [ "$ECHO" = sipp ]; then
sipp -sf "$ROOT/tests/sipp/uas_answer.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$UAS_PORT" -mp "$UAS_MEDIA" \
    -cp "$UAS_CTRL" -rtp_echo -rtp_buffsize 4194304 -nostdin -max_recv_loops 10000 -buff_size 16777216 -trace_err \
    -error_file "$OUT/uas-errors.log" >"$OUT/uas.out" 2>&1 &
UAS=$!
ECHO_PID=$UAS
else
# ECHO=batched: SIPp answers the calls (signalling) with an SDP naming the batched echo's port.
sed -e 's|m=audio \[media_port\]|m=audio '"$ECHO_PORT"'|' "$ROOT/tests/sipp/uas_answer.xml" >"$OUT/uas_answer.xml"
grep -q "m=audio $ECHO_PORT" "$OUT/uas_answer.xml" || { log "could not build the callee scenario"; exit 1; }
sipp -sf "$OUT/uas_answer.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$UAS_PORT" -mp "$UAS_MEDIA" \
    -cp "$UAS_CTRL" -nostdin -max_recv_loops 10000 -buff_size 16777216 -trace_err \
    -error_file "$OUT/uas-errors.log" >"$OUT/uas.out" 2>&1 &
UAS=$!
"$OUT/echo" "$ECHO_PORT" >"$OUT/echo.out" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
fi
PIDS+=("$UAS")

rtpe_cli() { # rtpe_cli COMMAND PATTERN: the number after the line matching PATTERN in rtpengine's CLI answer
    { exec 3<>"/dev/tcp/127.0.0.1/$RTPE_CLI" && echo "$1" >&3 && timeout 2 cat <&3; exec 3<&-; } 2>/dev/null |
        awk -F: -v p="$2" 'index($0, p) == 1 { gsub(/ /, "", $2); print $2; exit }'
}
metric() { # metric NAME: one value from callgate's /metrics (the whole page is read: no SIGPIPE), or
    # rtpengine's counterpart from its CLI (relayed packets: one count for in and out, it drops none
    # of its own accord; calls: sessions)
    if [ "$SYSTEM" != callgate ]; then
        case "$1" in
            callgate_active_calls) rtpe_cli "list numsessions" "Current sessions own" ;;
            callgate_rtp_packets_*) rtpe_cli "list totals" " Total relayed packets (userspace)" ;;
        esac
        return 0
    fi
    { curl -s --max-time 5 "http://127.0.0.1:$CG_HTTP/metrics" || true; } | awk -v n="$1" \
        'index($0, n) == 1 && substr($0, length(n) + 1, 1) ~ /[ {]/ { if (!done) { print $NF; done = 1 } }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$CG/stat"; }
media_ticks() { cat /proc/$CG/task/*/stat 2>/dev/null | awk '$2 ~ /callgate-(media|pacer)/ { t += $14 + $15 } END { print t + 0 }'; }
udp() { awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else { for (i = 2; i <= NF; i++) if (k[i] == "'"$1"'") print $i } }' /proc/net/snmp; }
wall() { date +%s.%N; }
HZ=$(getconf CLK_TCK)
rcvbuf0=$(udp RcvbufErrors)
# Datagrams to a port nobody has open (the kernel answers with ICMP port unreachable): the machine's
# count, e.g. a stream's last packets after its call's port closed.
unreach() { awk '/^Icmp:/ { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else { for (i = 2; i <= NF; i++) if (k[i] == "OutDestUnreachs") print $i } }' /proc/net/snmp; }
unreach0=$(unreach)

: >"$OUT/ports.log"
if [ "$SYSTEM" != callgate ]; then
# rtpengine: every call is set up through its ng protocol (offer: the blaster's SDP, answer: the
# echo's) before any media flows; the port rtpengine gives the caller side goes to the blaster as
# for callgate, which then starts the streams at the ramp's rate. (Set up one by one while the
# earlier calls' media already flowed, the control requests queued behind the relaying and the
# calls were never all up together.)
python3 - "$CALLS" "$RATE" "$BLAST_PORT" "$ECHO_PORT" "$OUT/ports.log" >"$OUT/ng.out" 2>&1 <<'PY'
import socket, sys, time, re
calls, rate, blast, echo, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def enc(v):
    if isinstance(v, int): return b"i%de" % v
    if isinstance(v, str): v = v.encode()
    if isinstance(v, bytes): return b"%d:%s" % (len(v), v)
    if isinstance(v, list): return b"l" + b"".join(enc(x) for x in v) + b"e"
    return b"d" + b"".join(enc(k) + enc(v[k]) for k in sorted(v)) + b"e"
def sdp(port): return "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %s RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n" % port
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
out = open(log, "a"); t0 = time.monotonic(); ok = 0; ports = []
for i in range(calls):
    cid = "bench-%d" % i
    def ng(d):
        # A cookie per request: rtpengine answers a repeated cookie with its cached reply (the ng
        # protocol's retransmission rule), so an answer sent with the offer's cookie would get the
        # offer's reply back and never be processed.
        cookie = b"%s-%d" % (d["command"].encode(), i)
        s.sendto(cookie + b" " + enc(d), ("127.0.0.1", 2223))
        while True:
            r = s.recv(65535)
            if r.startswith(cookie + b" "): return r
    ng({"command": "offer", "call-id": cid, "from-tag": "a", "sdp": sdp(blast), "replace": ["origin", "session-connection"]})
    r = ng({"command": "answer", "call-id": cid, "from-tag": "a", "to-tag": "b", "sdp": sdp(echo), "replace": ["origin", "session-connection"]})
    m = re.search(rb"m=audio (\d+)", r)
    if m: ports.append(m.group(1).decode()); ok += 1
out.write("".join("AUDIOPORT %s\n" % p for p in ports))
print("calls set up", ok, "in %.1f s" % (time.monotonic() - t0))
PY
log "$(cat "$OUT/ng.out")"
fi
"$OUT/blaster" "$OUT/ports.log" "$BLAST_PORT" $(( (HOLD_S - 1) * 1000 )) $((RAMP_S + HOLD_S + 15)) "$RATE" >"$OUT/blaster.out" 2>&1 &
BLASTER=$!
PIDS+=("$BLASTER")
if [ "$SYSTEM" = callgate ]; then
sipp "127.0.0.1:$CG_SIP" -sf "$OUT/uac_bridge.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$UAC_PORT" -mp "$UAC_MEDIA" \
    -cp "$UAC_CTRL" -s 200 -key caller 0212345678 -r "$RATE" -m "$CALLS" -l "$CALLS" -d $((HOLD_S * 1000)) \
    -trace_logs -log_file "$OUT/ports.log" \
    -nostdin -timeout $((RAMP_S + HOLD_S + 60))s -timeout_error -max_recv_loops 10000 -buff_size 16777216 \
    -trace_stat -stf "$OUT/uac-stat.csv" -fd 1 -trace_err -error_file "$OUT/uac-errors.log" \
    >"$OUT/uac.out" 2>&1 &
SIPP=$!
else
SIPP=$BLASTER # (rtpengine: the calls last as long as the blaster)
fi
PIDS+=("$SIPP")

# Once a second: elapsed time, calls at once, packets received and sent by callgate (/metrics), CPU
# ticks of the relay (whole process, and callgate's media threads), and the SIPp callee's (the echo's)
# time on a CPU and time runnable but waiting for one (/proc/PID/task/*/schedstat, nanoseconds).
echo_sched() { cat /proc/$ECHO_PID/task/*/schedstat 2>/dev/null | awk '{ r += $1; w += $2 } END { printf "%.0f\t%.0f", r, w }'; }
: >"$OUT/samples.tsv"
start_t=$(wall); prev=$(cpu_ticks); prev_media=$(media_ticks); prev_t=$start_t
while kill -0 "$SIPP" 2>/dev/null; do
    sleep 1
    now=$(cpu_ticks); now_media=$(media_ticks); now_t=$(wall)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(awk -v a="$start_t" -v b="$now_t" 'BEGIN { printf "%.3f", b - a }')" \
        "$(metric callgate_active_calls)" "$((now - prev))" "$((now_media - prev_media))" \
        "$(awk -v a="$prev_t" -v b="$now_t" 'BEGIN { printf "%.3f", b - a }')" \
        "$(metric callgate_rtp_packets_received_total)" "$(metric callgate_rtp_packets_sent_total)" "$(echo_sched)" >>"$OUT/samples.tsv"
    prev=$now; prev_media=$now_media; prev_t=$now_t
done
wait "$SIPP" && SIPP_RC=0 || SIPP_RC=$?
sleep 1

# Plateau: from RAMP_S + 1 s (every call is up) to HOLD_S - 1 s (none has ended yet).
plateau=$(awk -F'\t' -v a="$((RAMP_S + 1))" -v b="$((HOLD_S - 1))" -v hz="$HZ" '
    NR > 1 && $1 >= a && $1 <= b { n++; s += $2; c += $3; m += $4; t += $5; if ($7 != "") { r += $6 - prev_r; o += $7 - prev_s }
        er += $8 - prev_er; ew += $9 - prev_ew }
    { prev_r = $6; prev_s = $7; prev_er = $8; prev_ew = $9 }
    END { if (n && t > 0) printf "%d %.1f %.1f %.0f %.0f %.1f %.1f", s / n, 100 * c / hz / t, 100 * m / hz / t, r / t, o / t, er / t / 1e7, ew / t / 1e7; else print "0 0 0 0 0 0 0" }' "$OUT/samples.tsv")
read -r calls cpu media_cpu rx_rate tx_rate echo_run echo_wait <<<"$plateau"
received=$(metric callgate_rtp_packets_received_total)
sent=$(metric callgate_rtp_packets_sent_total)
rcvbuf=$(( $(udp RcvbufErrors) - rcvbuf0 ))
unreachable=$(( $(unreach) - unreach0 ))
completed=-; failed=-
if [ -f "$OUT/uac-stat.csv" ]; then
    completed=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "SuccessfulCall(C)") f = i; next } { v = $f } END { print v + 0 }' "$OUT/uac-stat.csv")
    failed=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "FailedCall(C)") f = i; next } { v = $f } END { print v + 0 }' "$OUT/uac-stat.csv")
fi
# Where the receive-buffer drops were: per socket, from /proc/net/udp (its last column), before the
# processes end and their sockets go.
drops=$(awk -v e="$ECHO_PORT" -v b="$BLAST_PORT" 'function hex(h,  i, v) { v = 0; for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789ABCDEF", toupper(substr(h, i, 1))) - 1; return v }
    NR > 1 { split($2, a, ":"); p = hex(a[2]); d = $NF
    if (p == e) echo += d; else if (p == b) blast += d; else if (p >= 20000 && p < 40000) relay += d; else other += d }
    END { printf "echo %d, blaster %d, relay ports %d, other %d", echo, blast, relay, other }' /proc/net/udp)
kill -TERM "$CG"; wait "$CG" || true
wait "$BLASTER" || true
read -r _ streams _ bl_sent _ bl_back _ <"$OUT/blaster.out" || true
loss=$(awk -v s="${bl_sent:-0}" -v b="${bl_back:-0}" 'BEGIN { if (s) printf "%.3f", 100 * (1 - b / s); else print "-" }')

{
    echo "| system | calls at once | calls/s ramp | completed / failed | relayed packets/s at the plateau (received/s) | end-to-end loss (blaster sent / came back) | relay received / sent | UDP rcvbuf drops | relay CPU at the plateau (media threads) |"
    echo "|---|---:|---:|---|---:|---|---|---:|---:|"
    echo "| $SYSTEM | $calls (of $CALLS) | $RATE | $completed / $failed (exit $SIPP_RC) | $tx_rate ($rx_rate) | $loss% ($bl_sent / $bl_back) | $received / $sent | $rcvbuf | ${cpu}% of one core (${media_cpu}%) |"
    echo
    echo "blaster: $(cat "$OUT/blaster.out")"
    echo "receive-buffer drops by socket: $drops; datagrams to closed ports (ICMP unreachable sent): $unreachable"
    echo "the echo ($ECHO) at the plateau: on a CPU ${echo_run}% of the time, runnable but waiting for a CPU ${echo_wait}%"
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
} | tee "$OUT/results.md"
