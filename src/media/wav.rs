//! RIFF/WAVE loading for prompts: 8000 Hz, 16-bit, mono, linear PCM only.
//!
//! Chunks other than `fmt ` and `data` (`LIST`, `fact`, `cue `, ...) are skipped; every chunk body is
//! followed by one pad byte when its size is odd (RIFF rule), which is honoured when skipping. A
//! `WAVE_FORMAT_EXTENSIBLE` header is accepted when its sub-format is PCM. Anything else is rejected
//! with an error naming the file and saying what was expected and what was found.

use std::path::{Path, PathBuf};

/// `wFormatTag` of linear PCM.
const FORMAT_PCM: u16 = 0x0001;
/// `wFormatTag` of WAVE_FORMAT_EXTENSIBLE; the real format is the first two bytes of the sub-format GUID.
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// The format a WAV file declares in its `fmt ` chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WavFormat {
    /// `wFormatTag` (for EXTENSIBLE, the sub-format's tag).
    pub format_tag: u16,
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
}

impl WavFormat {
    fn tag_name(&self) -> String {
        match self.format_tag {
            0x0001 => "PCM".into(),
            0x0003 => "IEEE float".into(),
            0x0006 => "A-law".into(),
            0x0007 => "μ-law".into(),
            0x0011 => "IMA ADPCM".into(),
            0x0055 => "MP3".into(),
            t => format!("format tag {t:#06x}"),
        }
    }
}

impl std::fmt::Display for WavFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}-bit, {} channel{}, {} Hz",
            self.tag_name(),
            self.bits_per_sample,
            self.channels,
            if self.channels == 1 { "" } else { "s" },
            self.sample_rate
        )
    }
}

/// Why a WAV file could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a RIFF/WAVE file: expected \"RIFF\" .... \"WAVE\" in the first 12 bytes, found {found:?}")]
    NotWave { file: PathBuf, found: String },
    #[error("{file}: truncated {chunk:?} chunk at byte {offset}: it declares {declared} bytes, {available} are left")]
    Truncated {
        file: PathBuf,
        chunk: String,
        offset: usize,
        declared: u32,
        available: usize,
    },
    #[error("{file}: truncated chunk header at byte {offset}: 8 bytes needed, {available} left")]
    TruncatedHeader {
        file: PathBuf,
        offset: usize,
        available: usize,
    },
    #[error("{file}: \"fmt \" chunk is {len} bytes, at least 16 expected")]
    ShortFmt { file: PathBuf, len: u32 },
    #[error("{file}: no \"fmt \" chunk before the \"data\" chunk")]
    NoFmt { file: PathBuf },
    #[error("{file}: no \"data\" chunk")]
    NoData { file: PathBuf },
    #[error("{file}: expected PCM 16-bit, 1 channel, 8000 Hz; found {found}")]
    Unsupported { file: PathBuf, found: WavFormat },
    #[error("{file}: \"data\" chunk is {len} bytes, not a whole number of 16-bit samples")]
    OddData { file: PathBuf, len: u32 },
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<Vec<i16>, WavError> {
    let bytes = std::fs::read(path).map_err(|source| WavError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses a whole WAV file held in memory; `file` is only used in errors.
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    let f = || file.to_path_buf();
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        let head = &bytes[..bytes.len().min(12)];
        return Err(WavError::NotWave {
            file: f(),
            found: String::from_utf8_lossy(head).into_owned(),
        });
    }
    // The RIFF size may be wrong (streaming writers): chunks are walked to the end of the bytes instead.
    let mut pos = 12;
    let mut format: Option<WavFormat> = None;
    while pos < bytes.len() {
        let available = bytes.len() - pos;
        if available < 8 {
            // A trailing pad byte or junk shorter than a chunk header after the data: tolerated only
            // if we already have what we need.
            if format.is_some() {
                break;
            }
            return Err(WavError::TruncatedHeader {
                file: f(),
                offset: pos,
                available,
            });
        }
        let id = &bytes[pos..pos + 4];
        let size = le32(bytes, pos + 4);
        let body = pos + 8;
        let left = bytes.len() - body;
        let chunk = || String::from_utf8_lossy(id).into_owned();
        if size as usize > left {
            return Err(WavError::Truncated {
                file: f(),
                chunk: chunk(),
                offset: pos,
                declared: size,
                available: left,
            });
        }
        let data = &bytes[body..body + size as usize];
        match id {
            b"fmt " => {
                if size < 16 {
                    return Err(WavError::ShortFmt {
                        file: f(),
                        len: size,
                    });
                }
                let mut fmt = WavFormat {
                    format_tag: le16(data, 0),
                    channels: le16(data, 2),
                    sample_rate: le32(data, 4),
                    bits_per_sample: le16(data, 14),
                };
                // WAVE_FORMAT_EXTENSIBLE: cbSize(2) validBits(2) channelMask(4) SubFormat GUID(16).
                if fmt.format_tag == FORMAT_EXTENSIBLE && size >= 40 {
                    fmt.format_tag = le16(data, 24);
                }
                format = Some(fmt);
            }
            b"data" => {
                let Some(fmt) = format else {
                    return Err(WavError::NoFmt { file: f() });
                };
                let ok = fmt.format_tag == FORMAT_PCM
                    && fmt.channels == 1
                    && fmt.sample_rate == 8000
                    && fmt.bits_per_sample == 16;
                if !ok {
                    return Err(WavError::Unsupported {
                        file: f(),
                        found: fmt,
                    });
                }
                if !size.is_multiple_of(2) {
                    return Err(WavError::OddData {
                        file: f(),
                        len: size,
                    });
                }
                return Ok(data
                    .chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]))
                    .collect());
            }
            _ => {}
        }
        // Odd-sized chunks are followed by a pad byte.
        pos = body + size as usize + (size as usize & 1);
    }
    match format {
        None => Err(WavError::NoFmt { file: f() }),
        Some(_) => Err(WavError::NoData { file: f() }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a WAV file: header fields, extra chunks before `data`, samples.
    pub(crate) fn wav_bytes(
        tag: u16,
        channels: u16,
        rate: u32,
        bits: u16,
        extra: &[(&[u8; 4], &[u8])],
        samples: &[i16],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        let block = channels * bits / 8;
        v.extend_from_slice(&(rate * block as u32).to_le_bytes());
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        for (id, body) in extra {
            v.extend_from_slice(*id);
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(body);
            if body.len() % 2 == 1 {
                v.push(0);
            }
        }
        v.extend_from_slice(b"data");
        v.extend_from_slice(&((samples.len() * 2) as u32).to_le_bytes());
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        let riff = (v.len() - 8) as u32;
        v[4..8].copy_from_slice(&riff.to_le_bytes());
        v
    }

    fn p() -> &'static Path {
        Path::new("audio/x.wav")
    }

    #[test]
    fn parses_pcm_and_skips_odd_sized_unknown_chunks() {
        let samples = [0i16, 1, -1, 32767, -32768];
        let b = wav_bytes(
            1,
            1,
            8000,
            16,
            &[(b"LIST", b"abc"), (b"fact", b"\x05\0\0\0")],
            &samples,
        );
        assert_eq!(parse(p(), &b).unwrap(), samples);
    }

    #[test]
    fn rejects_wrong_format_saying_what_was_found() {
        let b = wav_bytes(1, 2, 44100, 16, &[], &[0, 0]);
        let e = parse(p(), &b).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, WavError::Unsupported { .. }));
        assert!(s.contains("audio/x.wav"), "{s}");
        assert!(s.contains("found PCM 16-bit, 2 channels, 44100 Hz"), "{s}");
        let e = parse(p(), &wav_bytes(7, 1, 8000, 8, &[], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("found μ-law 8-bit, 1 channel, 8000 Hz"), "{e}");
        let e = parse(p(), &wav_bytes(1, 1, 16000, 16, &[], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("16000 Hz"), "{e}");
    }

    #[test]
    fn structural_errors() {
        assert!(matches!(
            parse(p(), b"RIFX\0\0\0\0WAVE"),
            Err(WavError::NotWave { .. })
        ));
        assert!(matches!(parse(p(), b""), Err(WavError::NotWave { .. })));
        let mut b = wav_bytes(1, 1, 8000, 16, &[], &[1, 2, 3]);
        b.truncate(b.len() - 1);
        let e = parse(p(), &b).unwrap_err();
        assert!(
            matches!(e, WavError::Truncated { ref chunk, declared: 6, available: 5, .. } if chunk == "data"),
            "{e}"
        );
        // data before fmt
        let mut v = b"RIFF\0\0\0\0WAVEdata\x02\0\0\0\0\0".to_vec();
        assert!(matches!(parse(p(), &v), Err(WavError::NoFmt { .. })));
        v.truncate(12);
        assert!(matches!(parse(p(), &v), Err(WavError::NoFmt { .. })));
        // fmt but no data
        let b = wav_bytes(1, 1, 8000, 16, &[], &[]);
        let fmt_only = &b[..b.len() - 8];
        assert!(matches!(parse(p(), fmt_only), Err(WavError::NoData { .. })));
        // odd data length
        let mut b = wav_bytes(1, 1, 8000, 16, &[], &[]);
        let n = b.len();
        b[n - 4..].copy_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        assert!(matches!(
            parse(p(), &b),
            Err(WavError::OddData { len: 1, .. })
        ));
        // short fmt
        let v = b"RIFF\0\0\0\0WAVEfmt \x04\0\0\0\x01\0\x01\0".to_vec();
        assert!(matches!(
            parse(p(), &v),
            Err(WavError::ShortFmt { len: 4, .. })
        ));
        // io
        let e = load(Path::new("/nonexistent/dir/none.wav")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/dir/none.wav: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        let base = wav_bytes(1, 1, 8000, 16, &[(b"LIST", b"xyz")], &[5, 6, 7]);
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut b = base.clone();
            for _ in 0..3 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x >> 8) as usize % b.len();
                b[i] = (x >> 16) as u8;
            }
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            b.truncate((x >> 4) as usize % (b.len() + 1));
            let _ = parse(p(), &b);
        }
    }

    #[test]
    fn the_committed_prompts_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio");
        for name in ["guidance-ko", "guidance-en", "closed-ko", "closed-en"] {
            let s = load(&dir.join(format!("{name}.wav"))).unwrap();
            if name.starts_with("guidance") {
                assert_eq!(s.len(), 13 * 8000, "{name}");
            }
            let peak = s.iter().map(|&x| (x as i32).abs()).max().unwrap();
            // Normalised to about -3 dBFS: 0.708 * 32768 ≈ 23197; never clipped.
            assert!((20000..=23300).contains(&peak), "{name}: peak {peak}");
        }
    }
}
