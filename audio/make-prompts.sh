#!/bin/sh
# Regenerates the callgate announcement prompts in this directory with espeak-ng and sox.
# Re-runnable: the same espeak-ng/sox versions give byte-identical files (no dither, repeatable mode).
#
#   guidance-ko.wav / guidance-en.wav  guidance announcement, exactly 13.000 s (104000 samples: 0.2 s lead-in,
#                                      speech, trailing silence up to 13 s)
#   closed-ko.wav   / closed-en.wav    outside-opening-hours message (speech + 0.5 s tail)
#
# Output format: RIFF/WAVE, PCM 16-bit signed, mono, 8000 Hz; peak normalised to -3 dBFS.
# Requires: espeak-ng (voices ko, en), sox, soxi.
set -eu
cd "$(dirname "$0")"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

GUIDANCE_SAMPLES=104000   # 13 s at 8 kHz
LEAD_IN=1600              # 0.2 s of silence before the speech (samples)
TAIL=4000                 # 0.5 s of silence after the closed message (samples)

GUIDANCE_KO="안녕하십니까. 일이공 다산콜센터입니다. 상담 품질을 위해 통화가 녹음됩니다. 외국어 상담은 9번을 눌러 주십시오. 잠시만 기다리시면 상담사가 곧 연결됩니다."
GUIDANCE_EN="Hello, and thank you for calling the one two zero Dasan Call Centre. This call may be recorded for service quality. For another language, press 9. Please stay on the line. A counsellor will answer shortly."
CLOSED_KO="안녕하십니까. 일이공 다산콜센터입니다. 지금은 상담 시간이 아닙니다. 상담 시간은 평일 오전 8시부터 오후 7시까지, 주말과 공휴일은 오전 9시부터 오후 6시까지입니다. 감사합니다."
CLOSED_EN="Thank you for calling the one two zero Dasan Call Centre. We are closed now. Our opening hours are 8 a.m. to 7 p.m. on weekdays, and 9 a.m. to 6 p.m. on weekends and holidays. Thank you."

# speak VOICE SPEED TEXT OUT: espeak-ng at 22050 Hz -> trim leading/trailing silence -> 8 kHz 16-bit mono,
# peak -3 dBFS (the sox rate effect filters out everything above 4 kHz before decimating).
speak() {
    espeak-ng -v "$1" -s "$2" -w "$TMP/raw.wav" "$3"
    sox -R -D -G "$TMP/raw.wav" -r 8000 -b 16 -e signed-integer -c 1 "$4" \
        silence 1 0.01 -50d reverse silence 1 0.01 -50d reverse \
        rate -v 8000 gain -n -3
}

# guidance VOICE SPEED TEXT OUT: exactly GUIDANCE_SAMPLES long; fails if the speech does not fit.
guidance() {
    speak "$1" "$2" "$3" "$TMP/speech.wav"
    len=$(soxi -s "$TMP/speech.wav")
    tail=$((GUIDANCE_SAMPLES - LEAD_IN - len))
    if [ "$tail" -lt 0 ]; then
        echo "make-prompts: $4: speech is $len samples, too long for $GUIDANCE_SAMPLES - raise the speed" >&2
        exit 1
    fi
    sox -R -D "$TMP/speech.wav" "$4" pad "${LEAD_IN}s" "${tail}s"
}

# closed VOICE SPEED TEXT OUT: lead-in + speech + TAIL.
closed() {
    speak "$1" "$2" "$3" "$TMP/speech.wav"
    sox -R -D "$TMP/speech.wav" "$4" pad "${LEAD_IN}s" "${TAIL}s"
}

guidance ko 195 "$GUIDANCE_KO" guidance-ko.wav
guidance en 170 "$GUIDANCE_EN" guidance-en.wav
closed ko 175 "$CLOSED_KO" closed-ko.wav
closed en 165 "$CLOSED_EN" closed-en.wav

for f in guidance-ko.wav guidance-en.wav closed-ko.wav closed-en.wav; do
    printf '%s\t%s s\t%s Hz\t%s ch\t%s bit\n' "$f" "$(soxi -D "$f")" "$(soxi -r "$f")" "$(soxi -c "$f")" "$(soxi -b "$f")"
done
