//! Announcements, encoded once at load into both G.711 laws and served as 20 ms frames.
//!
//! A [`Prompt`] holds the whole announcement as one μ-law and one A-law [`Bytes`], each a whole number of
//! 160-byte frames (the last one padded with the law's silence). [`Prompt::frame`] is a slice into that
//! shared buffer: playing a prompt to thousands of callers copies nothing and allocates nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{g711, wav, Codec, MediaError, FRAME_SAMPLES, PTIME_MS};

/// One announcement in both laws. Immutable once built; shared as `Arc<Prompt>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    name: String,
    pcmu: Bytes,
    pcma: Bytes,
}

impl Prompt {
    /// Encodes 8 kHz linear samples to both laws, padding the last frame with silence.
    pub fn from_pcm(name: impl Into<String>, pcm: &[i16]) -> Prompt {
        let frames = pcm.len().div_ceil(FRAME_SAMPLES);
        let len = frames * FRAME_SAMPLES;
        let mut u = Vec::with_capacity(len);
        let mut a = Vec::with_capacity(len);
        g711::encode_ulaw(pcm, &mut u);
        g711::encode_alaw(pcm, &mut a);
        u.resize(len, g711::ULAW_SILENCE);
        a.resize(len, g711::ALAW_SILENCE);
        Prompt {
            name: name.into(),
            pcmu: Bytes::from(u),
            pcma: Bytes::from(a),
        }
    }

    /// `frames` frames of digital silence (for tests, and pauses in playlists).
    pub fn silence(name: impl Into<String>, frames: usize) -> Prompt {
        let len = frames * FRAME_SAMPLES;
        Prompt {
            name: name.into(),
            pcmu: Bytes::from(vec![g711::ULAW_SILENCE; len]),
            pcma: Bytes::from(vec![g711::ALAW_SILENCE; len]),
        }
    }

    /// Loads `path` (8 kHz 16-bit mono PCM WAV). Empty files are refused.
    pub fn load(name: impl Into<String>, path: &Path) -> Result<Prompt, MediaError> {
        let pcm = wav::load(path)?;
        if pcm.is_empty() {
            return Err(MediaError::EmptyPrompt {
                file: path.to_path_buf(),
            });
        }
        Ok(Prompt::from_pcm(name, &pcm))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of 20 ms frames.
    pub fn frames(&self) -> usize {
        self.pcmu.len() / FRAME_SAMPLES
    }

    /// Frame `i` (160 bytes) in `codec`'s law. Panics if `i >= frames()`.
    #[inline]
    pub fn frame(&self, i: usize, codec: Codec) -> &[u8] {
        let start = i * FRAME_SAMPLES;
        &self.bytes(codec)[start..start + FRAME_SAMPLES]
    }

    /// The whole prompt in `codec`'s law (a cheap clone of the shared buffer is `bytes(c).clone()`).
    pub fn bytes(&self, codec: Codec) -> &Bytes {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }

    /// Playing time: frames × 20 ms.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.frames() as u64 * PTIME_MS as u64)
    }
}

/// The prompts an edge can play, loaded once at start.
#[derive(Clone, Debug, Default)]
pub struct PromptSet {
    prompts: HashMap<String, Arc<Prompt>>,
}

impl PromptSet {
    /// Loads `dir/NAME.wav` for every name (duplicates are loaded once). Names must be plain file names.
    pub fn load<S: AsRef<str>>(dir: &Path, names: &[S]) -> Result<PromptSet, MediaError> {
        let mut set = PromptSet::default();
        for name in names {
            let name = name.as_ref();
            let plain = !name.is_empty()
                && name != "."
                && name != ".."
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !plain {
                return Err(MediaError::BadPromptName {
                    name: name.to_owned(),
                });
            }
            if set.prompts.contains_key(name) {
                continue;
            }
            let prompt = Prompt::load(name, &dir.join(format!("{name}.wav")))?;
            set.prompts.insert(name.to_owned(), Arc::new(prompt));
        }
        Ok(set)
    }

    /// Adds (or replaces) a prompt built in memory.
    pub fn insert(&mut self, prompt: Prompt) {
        self.prompts.insert(prompt.name.clone(), Arc::new(prompt));
    }

    pub fn get(&self, name: &str) -> Option<Arc<Prompt>> {
        self.prompts.get(name).cloned()
    }

    /// Resolves a playlist of names; `UnknownPrompt` for the first one not loaded.
    pub fn playlist<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<Arc<Prompt>>, MediaError> {
        names
            .iter()
            .map(|n| {
                self.get(n.as_ref())
                    .ok_or_else(|| MediaError::UnknownPrompt {
                        name: n.as_ref().to_owned(),
                    })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prompts.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_padded_with_each_laws_silence() {
        let pcm: Vec<i16> = (0..161).map(|i| (i * 100) as i16).collect();
        let p = Prompt::from_pcm("t", &pcm);
        assert_eq!(p.frames(), 2);
        assert_eq!(p.duration(), Duration::from_millis(40));
        assert_eq!(p.frame(0, Codec::Pcmu)[5], g711::linear_to_ulaw(500));
        assert_eq!(p.frame(0, Codec::Pcma)[5], g711::linear_to_alaw(500));
        assert_eq!(p.frame(1, Codec::Pcmu)[0], g711::linear_to_ulaw(16000));
        assert!(p.frame(1, Codec::Pcmu)[1..].iter().all(|&b| b == 0xFF));
        assert!(p.frame(1, Codec::Pcma)[1..].iter().all(|&b| b == 0xD5));
        assert_eq!(Prompt::from_pcm("e", &[]).frames(), 0);
        assert_eq!(Prompt::silence("s", 3).frames(), 3);
    }

    #[test]
    fn frame_is_a_slice_of_the_shared_buffer() {
        let p = Prompt::from_pcm("t", &[1000; 480]);
        let base = p.bytes(Codec::Pcma).as_ptr();
        for i in 0..3 {
            let f = p.frame(i, Codec::Pcma);
            assert_eq!(f.len(), 160);
            assert_eq!(f.as_ptr(), base.wrapping_add(i * 160));
        }
    }

    #[test]
    fn prompt_set_loads_the_committed_prompts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio");
        let set = PromptSet::load(
            &dir,
            &["guidance-ko", "guidance-en", "guidance-ko", "closed-ko"],
        )
        .unwrap();
        assert_eq!(set.len(), 3);
        let g = set.get("guidance-ko").unwrap();
        assert_eq!(g.frames(), 650);
        assert_eq!(g.duration(), Duration::from_secs(13));
        assert_eq!(g.name(), "guidance-ko");
        assert!(set.get("nope").is_none());
        let e = set.playlist(&["guidance-en", "nope"]).unwrap_err();
        assert!(
            matches!(e, MediaError::UnknownPrompt { ref name } if name == "nope"),
            "{e}"
        );
        assert_eq!(
            set.playlist(&["guidance-en", "closed-ko"]).unwrap().len(),
            2
        );
    }

    #[test]
    fn prompt_set_errors_name_the_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio");
        let e = PromptSet::load(&dir, &["missing"]).unwrap_err().to_string();
        assert!(e.contains("audio/missing.wav"), "{e}");
        let e = PromptSet::load(&dir, &["../Cargo"]).unwrap_err();
        assert!(matches!(e, MediaError::BadPromptName { .. }));
    }
}
