#!/bin/sh
# Regenerates the queue, menu and callback prompts in this directory with espeak-ng and sox
# (the guidance and closed messages: make-prompts.sh; numbers and position words: make-number-prompts.sh).
# Re-runnable: the same espeak-ng/sox versions give byte-identical files (no dither, repeatable mode).
#
#   music.wav                       queue / hold music: 16 s of a soft synthesised melody (C major
#                                   pentatonic, sine tones with fades), ends where it starts so it loops
#   menu-language.wav               "For Korean press 1. For English press 2." (both languages)
#   menu-invalid-ko / -en.wav       "That key is not in the menu."
#   menu-timeout-ko / -en.wav       "We did not receive a key."
#   callback-offer-ko / -en.wav     "To keep your place and be called back, press star."
#   callback-confirm-ko / -en.wav   "We will call you back when it is your turn. Goodbye."
#   queue-full-ko / -en.wav         "All counsellors are busy. Please call again later."
#
# Output format: RIFF/WAVE, PCM 16-bit signed, mono, 8000 Hz; peak normalised to -3 dBFS.
# Requires: espeak-ng (voices ko, en), sox.
set -eu
cd "$(dirname "$0")"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

speak() {
    espeak-ng -v "$1" -s "$2" -w "$TMP/raw.wav" "$3"
    sox -R -D -G "$TMP/raw.wav" -r 8000 -b 16 -e signed-integer -c 1 "$TMP/speech.wav" \
        silence 1 0.01 -50d reverse silence 1 0.01 -50d reverse \
        rate -v 8000 gain -n -3
    sox -R -D "$TMP/speech.wav" "$4" pad 0.2 0.4
}

speak ko 175 "한국어 상담은 1번을 눌러 주십시오." "$TMP/menu-ko.wav"
speak en 165 "For English, press 2." "$TMP/menu-en.wav"
sox -R -D "$TMP/menu-ko.wav" "$TMP/menu-en.wav" menu-language.wav
speak ko 175 "잘못 누르셨습니다." menu-invalid-ko.wav
speak en 165 "That key is not in the menu." menu-invalid-en.wav
speak ko 175 "입력이 없습니다." menu-timeout-ko.wav
speak en 165 "We did not receive a key." menu-timeout-en.wav
speak ko 175 "기다리지 않고 차례가 되면 전화를 받으시려면 별표를 눌러 주십시오." callback-offer-ko.wav
speak en 165 "To keep your place and be called back, press star." callback-offer-en.wav
speak ko 175 "차례가 되면 다시 전화 드리겠습니다. 감사합니다." callback-confirm-ko.wav
speak en 165 "We will call you back when it is your turn. Goodbye." callback-confirm-en.wav
speak ko 175 "지금은 모든 상담사가 통화 중입니다. 잠시 후 다시 걸어 주십시오." queue-full-ko.wav
speak en 165 "All counsellors are busy. Please call again later." queue-full-en.wav

# The music: 32 notes of 0.5 s, each a sine with a soft attack and release, over a quiet fifth drone.
notes="C4 E4 G4 A4 G4 E4 D4 C4  D4 E4 G4 C5 A4 G4 E4 D4  E4 G4 A4 C5 D5 C5 A4 G4  E4 D4 C4 D4 E4 D4 C4 C4"
i=0
for n in $notes; do
    sox -R -D -n -r 8000 -b 16 -c 1 "$TMP/n$(printf %02d $i).wav" synth 0.5 sine "$n" fade q 0.05 0.5 0.2 vol 0.5
    i=$((i + 1))
done
sox -R -D "$TMP"/n*.wav "$TMP/melody.wav"
sox -R -D -n -r 8000 -b 16 -c 1 "$TMP/drone.wav" synth 16 sine C3 sine G3 vol 0.08
sox -R -D -m "$TMP/melody.wav" "$TMP/drone.wav" -b 16 music.wav gain -n -3

for f in music.wav menu-language.wav menu-invalid-ko.wav menu-invalid-en.wav menu-timeout-ko.wav menu-timeout-en.wav \
         callback-offer-ko.wav callback-offer-en.wav callback-confirm-ko.wav callback-confirm-en.wav queue-full-ko.wav queue-full-en.wav; do
    printf '%s\t%s s\t%s Hz\n' "$f" "$(soxi -D "$f")" "$(soxi -r "$f")"
done
