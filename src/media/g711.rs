//! ITU-T G.711 μ-law and A-law companding, written from the recommendation.
//!
//! Linear samples are 16-bit two's complement (`i16`), as read from WAV files. G.711 itself works on
//! 14-bit (μ-law) and 13-bit (A-law) magnitudes: the low bits are dropped on encoding and decoded values
//! are the centre of their quantisation interval, scaled back to 16 bits.
//!
//! - μ-law (G.711 table 2): bias 33 on the 14-bit magnitude (132 at 16 bits), 8 segments of 16 steps,
//!   all bits inverted on the wire. Linear 0 encodes as `0xFF`; `0x7F` and `0xFF` both decode to 0.
//! - A-law (G.711 table 1): 13-bit magnitude, segment 0 and 1 share the smallest step, sign bit set for
//!   positive values and the even bits inverted (XOR `0x55`). Linear 0 encodes as `0xD5`.
//!
//! Decoding uses 256-entry const tables; encoding is a few integer operations (`leading_zeros`), which is
//! as fast as a 64 KiB table without its cache footprint. [`ALAW_TO_ULAW`] and [`ULAW_TO_ALAW`] transcode
//! byte for byte through the linear value (decode, then encode).

/// μ-law code of linear 0.
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code of linear 0 (the positive zero code).
pub const ALAW_SILENCE: u8 = 0xD5;

/// Largest magnitude μ-law can represent before the bias is added (16-bit scale).
const ULAW_CLIP: i32 = 32635;
const ULAW_BIAS: i32 = 0x84;

/// The position of the highest set bit of `x` (1 ..= 2^24), read from the exponent of `x` as an `f32`
/// (exact for integers below 2^24). The same as `31 - leading_zeros`, but it vectorises: SIMD has no
/// leading-zero count, so the mixer's encoding of whole frames runs several samples at a time.
#[inline]
const fn high_bit(x: i32) -> i32 {
    ((x as f32).to_bits() >> 23) as i32 - 127
}

/// Encodes one linear sample to μ-law.
#[inline]
pub const fn linear_to_ulaw(x: i16) -> u8 {
    let x = x as i32;
    let (sign, mag) = if x < 0 { (0x80u8, -x) } else { (0u8, x) };
    let mag = if mag > ULAW_CLIP { ULAW_CLIP } else { mag } + ULAW_BIAS; // 132 ..= 32767: bit 7..14 set
    // Segment = position of the highest set bit above bit 7.
    let exp = high_bit(mag) - 7; // 0..=7
    let mant = (mag >> (exp + 3)) & 0x0F;
    !(sign | ((exp as u8) << 4) | mant as u8)
}

/// Decodes one μ-law byte to linear (16-bit scale).
#[inline]
pub const fn ulaw_to_linear(b: u8) -> i16 {
    ULAW_DECODE[b as usize]
}

const fn ulaw_decode_calc(b: u8) -> i16 {
    let b = !b;
    let exp = ((b >> 4) & 0x07) as i32;
    let mant = (b & 0x0F) as i32;
    let mag = (((mant << 3) + ULAW_BIAS) << exp) - ULAW_BIAS;
    if b & 0x80 != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

/// Encodes one linear sample to A-law.
#[inline]
pub const fn linear_to_alaw(x: i16) -> u8 {
    let x = x as i32;
    // A-law sets the sign bit for positive values (and zero).
    let (sign, mag) = if x < 0 { (0x00u8, -x) } else { (0x80u8, x) };
    let mag = if mag > 32767 { 32767 } else { mag } >> 3; // 12-bit magnitude 0..=4095
    let code = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let seg = high_bit(mag) - 4; // 1..=7
        ((seg as u8) << 4) | ((mag >> seg) & 0x0F) as u8
    };
    (sign | code) ^ 0x55
}

/// Decodes one A-law byte to linear (16-bit scale).
#[inline]
pub const fn alaw_to_linear(b: u8) -> i16 {
    ALAW_DECODE[b as usize]
}

const fn alaw_decode_calc(b: u8) -> i16 {
    let b = b ^ 0x55;
    let seg = ((b >> 4) & 0x07) as i32;
    let mant = (b & 0x0F) as i32;
    let mag = if seg == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (seg - 1)
    };
    if b & 0x80 != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

/// μ-law byte → linear.
pub const ULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_calc(i as u8);
        i += 1;
    }
    t
};

/// A-law byte → linear.
pub const ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_calc(i as u8);
        i += 1;
    }
    t
};

/// A-law byte → μ-law byte, through the linear value.
pub const ALAW_TO_ULAW: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = linear_to_ulaw(alaw_decode_calc(i as u8));
        i += 1;
    }
    t
};

/// μ-law byte → A-law byte, through the linear value.
pub const ULAW_TO_ALAW: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = linear_to_alaw(ulaw_decode_calc(i as u8));
        i += 1;
    }
    t
};

/// Encodes a block of linear samples to μ-law, appending to `out`.
pub fn encode_ulaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&x| linear_to_ulaw(x)));
}

/// Encodes a block of linear samples to A-law, appending to `out`.
pub fn encode_alaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&x| linear_to_alaw(x)));
}

/// Transcodes in place between the laws (`from` is the law the bytes are in now).
pub fn transcode_in_place(bytes: &mut [u8], from: super::Codec) {
    let map = match from {
        super::Codec::Pcma => &ALAW_TO_ULAW,
        super::Codec::Pcmu => &ULAW_TO_ALAW,
    };
    for b in bytes {
        *b = map[*b as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        // Both μ-law zeros decode to 0; the extremes are ±32124.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        // A-law: the smallest steps decode to ±8, 0x00/0x80 to ∓5504, extremes ±32256.
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0x00), -5504);
        assert_eq!(alaw_to_linear(0x80), 5504);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        // Full scale.
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        // Segment boundary of μ-law at 16-bit scale: 123 + 132 = 255 is the last biased value of segment 0.
        assert_eq!(linear_to_ulaw(123), 0xF0); // exp 0, mant 15 → !0x0F
        assert_eq!(linear_to_ulaw(124), 0xEF); // exp 1, mant 0 → !0x10
    }

    #[test]
    fn decode_tables_are_monotonic_and_symmetric() {
        // μ-law: codes 0x80..=0xFF are positive, decreasing magnitude with increasing code.
        for b in 0x80u8..0xFF {
            assert!(ulaw_to_linear(b) > ulaw_to_linear(b + 1), "ulaw {b:#x}");
            assert_eq!(ulaw_to_linear(b), -ulaw_to_linear(b & 0x7F));
        }
        for b in 0u8..=255 {
            assert_eq!(alaw_to_linear(b), -alaw_to_linear(b ^ 0x80), "alaw {b:#x}");
        }
    }

    /// μ-law quantisation step at 16-bit scale for the segment of a decoded magnitude.
    fn ulaw_half_step(code: u8) -> i32 {
        let exp = ((!code >> 4) & 7) as i32;
        4 << exp
    }
    fn alaw_half_step(code: u8) -> i32 {
        let seg = (((code ^ 0x55) >> 4) & 7) as i32;
        if seg == 0 {
            8
        } else {
            8 << (seg - 1)
        }
    }

    #[test]
    fn round_trip_error_is_within_half_a_step_for_every_i16() {
        for x in i16::MIN..=i16::MAX {
            let xi = x as i32;
            let u = linear_to_ulaw(x);
            let ue = (ulaw_to_linear(u) as i32 - xi).abs();
            let clipped = xi.abs() > ULAW_CLIP;
            if clipped {
                assert_eq!(u & 0x7F, 0, "{x} should clip to the largest code");
                assert!(ue <= 32768 - 32124);
            } else {
                assert!(
                    ue <= ulaw_half_step(u),
                    "ulaw {x} -> {u:#x} -> {} err {ue}",
                    ulaw_to_linear(u)
                );
            }
            // Re-encoding a decoded value is the identity on codes (except μ-law's negative zero).
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(u)),
                if u == 0x7F { 0xFF } else { u }
            );

            let a = linear_to_alaw(x);
            let ae = (alaw_to_linear(a) as i32 - xi).abs();
            assert!(
                ae <= alaw_half_step(a),
                "alaw {x} -> {a:#x} -> {} err {ae}",
                alaw_to_linear(a)
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(a)), a);
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut prev_u = ulaw_to_linear(linear_to_ulaw(i16::MIN));
        let mut prev_a = alaw_to_linear(linear_to_alaw(i16::MIN));
        for x in i16::MIN..=i16::MAX {
            let du = ulaw_to_linear(linear_to_ulaw(x));
            let da = alaw_to_linear(linear_to_alaw(x));
            assert!(du >= prev_u && da >= prev_a, "at {x}");
            prev_u = du;
            prev_a = da;
        }
    }

    #[test]
    fn transcoding_maps_go_through_linear() {
        for b in 0u8..=255 {
            let u = ALAW_TO_ULAW[b as usize];
            assert_eq!(u, linear_to_ulaw(alaw_to_linear(b)));
            let a = ULAW_TO_ALAW[b as usize];
            assert_eq!(a, linear_to_alaw(ulaw_to_linear(b)));
            // The transcoded value stays within half a step of the target law.
            let e = (ulaw_to_linear(u) as i32 - alaw_to_linear(b) as i32).abs();
            assert!(
                e <= ulaw_half_step(u).max(32768 - 32124),
                "a {b:#x} -> u {u:#x} err {e}"
            );
            let e = (alaw_to_linear(a) as i32 - ulaw_to_linear(b) as i32).abs();
            assert!(e <= alaw_half_step(a), "u {b:#x} -> a {a:#x} err {e}");
        }
        // A-law has no zero level: its silence code decodes to +8, which μ-law represents exactly.
        assert_eq!(ALAW_TO_ULAW[ALAW_SILENCE as usize], 0xFE);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ULAW_TO_ALAW[ULAW_SILENCE as usize], 0xD5);
        // Sign is preserved by both maps.
        for b in 0u8..=255 {
            let l = alaw_to_linear(b);
            let t = ulaw_to_linear(ALAW_TO_ULAW[b as usize]);
            assert!(l.signum() == t.signum() || t == 0, "{b:#x}");
        }
        let mut buf = [0xD5u8, 0x55, 0x80];
        transcode_in_place(&mut buf, super::super::Codec::Pcma);
        assert_eq!(
            buf,
            [ALAW_TO_ULAW[0xD5], ALAW_TO_ULAW[0x55], ALAW_TO_ULAW[0x80]]
        );
    }
}
