#!/bin/sh
# Regenerates the queue-announcement prompts (position in queue, expected wait) with espeak-ng and
# sox: number words and the phrases around them, in Korean and English. callgate composes
# "you are number 123 in the queue; your expected wait is about 4 minutes" from these at run time
# (src/media/announce.rs). Re-runnable: the same espeak-ng/sox versions give byte-identical files.
#
# Output: num-ko-*.wav, num-en-*.wav, queue-*-ko.wav, queue-*-en.wav; RIFF/WAVE PCM 16-bit mono
# 8000 Hz, peak -3 dBFS, leading/trailing silence trimmed, then 40 ms of silence on each side.
# Requires: espeak-ng (voices ko, en), sox, soxi.
set -eu
cd "$(dirname "$0")"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# word VOICE SPEED TEXT OUT
word() {
    espeak-ng -v "$1" -s "$2" -w "$TMP/raw.wav" "$3"
    sox -R -D -G "$TMP/raw.wav" -r 8000 -b 16 -e signed-integer -c 1 "$TMP/w.wav" \
        silence 1 0.01 -50d reverse silence 1 0.01 -50d reverse \
        rate -v 8000 gain -n -3
    sox -R -D "$TMP/w.wav" "$4" pad 320s 320s
}

# Korean: Sino-Korean numerals, composed as 이 천 삼 백 오 십 육 (2356).
i=0
for w in 영 일 이 삼 사 오 육 칠 팔 구; do
    word ko 160 "$w" "num-ko-$i.wav"
    i=$((i + 1))
done
word ko 160 "십" num-ko-10.wav
word ko 160 "백" num-ko-100.wav
word ko 160 "천" num-ko-1000.wav
word ko 165 "고객님의 대기 순번은" queue-position-ko.wav
word ko 165 "번입니다." queue-position-end-ko.wav
word ko 165 "예상 대기 시간은 약" queue-wait-ko.wav
word ko 165 "분입니다." queue-wait-end-ko.wav
word ko 165 "예상 대기 시간은 1분 이내입니다." queue-wait-short-ko.wav

# English: zero to nineteen, the tens, hundred, thousand.
i=0
for w in zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen \
    sixteen seventeen eighteen nineteen; do
    word en 160 "$w" "num-en-$i.wav"
    i=$((i + 1))
done
i=20
for w in twenty thirty forty fifty sixty seventy eighty ninety; do
    word en 160 "$w" "num-en-$i.wav"
    i=$((i + 10))
done
word en 160 "hundred" num-en-100.wav
word en 160 "thousand" num-en-1000.wav
word en 160 "You are number" queue-position-en.wav
word en 160 "in the queue." queue-position-end-en.wav
word en 160 "Your expected wait is about" queue-wait-en.wav
word en 160 "minutes." queue-wait-end-en.wav
word en 160 "minute." queue-wait-end-one-en.wav
word en 160 "Your expected wait is less than a minute." queue-wait-short-en.wav

for f in num-*.wav queue-*.wav; do
    printf '%s\t%s s\n' "$f" "$(soxi -D "$f")"
done
