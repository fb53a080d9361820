//! The queue-announcement words in `audio/` (made by audio/make-number-prompts.sh) load as prompts,
//! and composed sentences have sensible lengths: what a waiting caller hears.

use std::path::Path;
use std::time::Duration;

use callgate::media::announce::{self, Lang};
use callgate::media::prompt::PromptSet;

#[test]
fn every_announcement_word_loads_and_sentences_have_sensible_lengths() {
    let names = announce::prompt_names();
    let set = PromptSet::load(Path::new("audio"), &names).expect("audio/ holds every announcement word");
    let length = |playlist: Vec<String>| -> Duration {
        playlist.iter().map(|n| set.get(n).unwrap_or_else(|| panic!("{n} not loaded")).duration()).sum()
    };
    for lang in Lang::ALL {
        for name in &names {
            let d = set.get(name).unwrap().duration();
            assert!(d > Duration::from_millis(150) && d < Duration::from_secs(4), "{name}: {d:?}");
        }
        let short = length(announce::position(3, lang));
        let long = length(announce::position(2356, lang));
        assert!(short > Duration::from_millis(800) && short < Duration::from_secs(5), "{lang:?} position 3: {short:?}");
        assert!(long > short, "{lang:?}: 2356 takes longer to say than 3");
        let wait = length(announce::expected_wait(Duration::from_secs(240), lang));
        assert!(wait < Duration::from_secs(6), "{lang:?} wait 4 min: {wait:?}");
    }
}
