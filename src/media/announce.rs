//! Queue announcements composed from recorded words: "you are number 123 in the queue", "your
//! expected wait is about 4 minutes", in Korean and English. The words are prompts in `audio/`
//! made by `audio/make-number-prompts.sh`; this module only chooses and orders their names, so a
//! playlist costs no audio work at run time (every prompt is encoded once at start).
//!
//! Korean reads numbers with Sino-Korean numerals (일 이 삼 … 십 백 천), as in "대기 순번은 삼 번입니다"
//! and "약 이 분입니다": 2356 is 이 천 삼 백 오 십 육, and a leading 일 is left out before 십, 백 and 천
//! (10 is 십, 100 is 백). English reads 2356 as "two thousand three hundred fifty six".

use std::time::Duration;

/// The language of an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    Ko,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Ko, Lang::En];

    fn tag(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }
}

/// Numbers up to this are spoken digit by digit group; larger ones are clamped (a queue position
/// or a wait in minutes beyond it is not something to read out to a caller).
pub const MAX_SPOKEN: u32 = 9_999;

/// The prompt names that speak `n` (clamped to [`MAX_SPOKEN`]).
pub fn number(n: u32, lang: Lang) -> Vec<String> {
    let n = n.min(MAX_SPOKEN);
    let mut out = Vec::new();
    let t = lang.tag();
    let word = |v: u32| format!("num-{t}-{v}");
    if n == 0 {
        out.push(word(0));
        return out;
    }
    match lang {
        Lang::Ko => {
            for (unit, value) in [(1000, n / 1000), (100, n / 100 % 10), (10, n / 10 % 10)] {
                if value == 0 {
                    continue;
                }
                if value > 1 {
                    out.push(word(value));
                }
                out.push(word(unit));
            }
            if !n.is_multiple_of(10) {
                out.push(word(n % 10));
            }
        }
        Lang::En => {
            if n >= 1000 {
                out.push(word(n / 1000));
                out.push(word(1000));
            }
            if !(n / 100).is_multiple_of(10) {
                out.push(word(n / 100 % 10));
                out.push(word(100));
            }
            let rest = n % 100;
            if rest >= 20 {
                out.push(word(rest / 10 * 10));
                if !rest.is_multiple_of(10) {
                    out.push(word(rest % 10));
                }
            } else if rest > 0 {
                out.push(word(rest));
            }
        }
    }
    out
}

/// "You are number N in the queue." (`position` counts from 1: the caller next in line is 1.)
pub fn position(position: u32, lang: Lang) -> Vec<String> {
    let t = lang.tag();
    let mut out = vec![format!("queue-position-{t}")];
    out.extend(number(position.max(1), lang));
    out.push(format!("queue-position-end-{t}"));
    out
}

/// "Your expected wait is about N minutes." Waits under a minute say so; longer ones are rounded
/// to the nearest minute (a caller hears "about 2 minutes" for 1 min 40 s).
pub fn expected_wait(wait: Duration, lang: Lang) -> Vec<String> {
    let t = lang.tag();
    let minutes = ((wait.as_secs() + 30) / 60) as u32;
    if wait < Duration::from_secs(60) || minutes == 0 {
        return vec![format!("queue-wait-short-{t}")];
    }
    let mut out = vec![format!("queue-wait-{t}")];
    out.extend(number(minutes, lang));
    out.push(match (lang, minutes) {
        (Lang::En, 1) => "queue-wait-end-one-en".to_owned(),
        _ => format!("queue-wait-end-{t}"),
    });
    out
}

/// Every prompt name this module can produce, for loading once at start.
pub fn prompt_names() -> Vec<String> {
    let mut names = Vec::new();
    for lang in Lang::ALL {
        let t = lang.tag();
        let nums: Vec<u32> = match lang {
            Lang::Ko => (0..=10).chain([100, 1000]).collect(),
            Lang::En => (0..20).chain((20..=90).step_by(10)).chain([100, 1000]).collect(),
        };
        names.extend(nums.into_iter().map(|v| format!("num-{t}-{v}")));
        for phrase in ["position", "position-end", "wait", "wait-end", "wait-short"] {
            names.push(format!("queue-{phrase}-{t}"));
        }
    }
    names.push("queue-wait-end-one-en".to_owned());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: Vec<String>) -> String {
        v.iter()
            .map(|n| n.rsplit('-').next().unwrap_or(n).to_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn korean_numbers_are_sino_korean_without_a_leading_il() {
        assert_eq!(words(number(0, Lang::Ko)), "0");
        assert_eq!(words(number(3, Lang::Ko)), "3");
        assert_eq!(words(number(10, Lang::Ko)), "10", "십, not 일십");
        assert_eq!(words(number(11, Lang::Ko)), "10 1");
        assert_eq!(words(number(20, Lang::Ko)), "2 10");
        assert_eq!(words(number(105, Lang::Ko)), "100 5", "백 오");
        assert_eq!(words(number(2356, Lang::Ko)), "2 1000 3 100 5 10 6");
        assert_eq!(words(number(1010, Lang::Ko)), "1000 10");
    }

    #[test]
    fn english_numbers_read_as_spoken() {
        assert_eq!(words(number(0, Lang::En)), "0");
        assert_eq!(words(number(13, Lang::En)), "13");
        assert_eq!(words(number(40, Lang::En)), "40");
        assert_eq!(words(number(45, Lang::En)), "40 5");
        assert_eq!(words(number(100, Lang::En)), "1 100");
        assert_eq!(words(number(2356, Lang::En)), "2 1000 3 100 50 6");
        assert_eq!(words(number(1007, Lang::En)), "1 1000 7");
        assert_eq!(number(123_456, Lang::En), number(MAX_SPOKEN, Lang::En), "clamped");
    }

    #[test]
    fn position_and_wait_sentences() {
        assert_eq!(
            position(3, Lang::Ko),
            ["queue-position-ko", "num-ko-3", "queue-position-end-ko"].map(String::from).to_vec()
        );
        assert_eq!(position(0, Lang::En)[1], "num-en-1", "the next caller is number one");
        assert_eq!(expected_wait(Duration::from_secs(40), Lang::Ko), ["queue-wait-short-ko"].map(String::from).to_vec());
        assert_eq!(
            expected_wait(Duration::from_secs(100), Lang::En),
            ["queue-wait-en", "num-en-2", "queue-wait-end-en"].map(String::from).to_vec(),
            "1 min 40 s is about 2 minutes"
        );
        assert_eq!(expected_wait(Duration::from_secs(70), Lang::En).last().unwrap(), "queue-wait-end-one-en");
    }

    #[test]
    fn every_composed_name_is_among_the_prompts_to_load() {
        let all = prompt_names();
        for lang in Lang::ALL {
            for n in (0..=1200).chain([2356, 9999]) {
                for name in number(n, lang).into_iter().chain(position(n, lang)) {
                    assert!(all.contains(&name), "{name} is not loaded");
                }
            }
            for s in [0u64, 59, 60, 61, 89, 90, 3600, 100_000] {
                for name in expected_wait(Duration::from_secs(s), lang) {
                    assert!(all.contains(&name), "{name} is not loaded");
                }
            }
        }
    }
}
