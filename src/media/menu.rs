//! The DTMF menu after a guidance: "for Korean press 1, for English press 2, ...". One [`Menu`] per call,
//! a sans-IO state machine: time comes in as `now`, and what to do comes out of [`Menu::poll_action`].
//!
//! The call core drives it like every other state machine in callgate:
//!
//! ```text
//!   menu.start(now);                      then after every input:
//!   menu.prompt_finished(now);            while let Some(a) = menu.poll_action() {
//!   menu.digit(now, '2');                     Play(name)    → play prompt `name` (replacing anything playing)
//!   menu.handle_timeout(now);                 StopPlayback  → stop the prompt now (barge-in)
//!                                             Chosen(c)     → the caller chose `c`: route with its queue/skill
//!                                             Default(c)    → no valid choice: route with `c`, or, if None,
//!                                         }                   to the service's own queue
//!   sleep until menu.poll_timeout()
//! ```
//!
//! `prompt_finished` must be reported only for a prompt that played to its end, never for one stopped by
//! `StopPlayback` or replaced by the next `Play`.
//!
//! # Behaviour
//!
//! - The menu prompt plays; when it has finished the caller has [`MenuSpec::timeout`] (5 s) to press a key.
//! - A key of the menu chooses at once. With [`MenuSpec::barge_in`], a key pressed while a prompt plays
//!   stops it and counts as the answer; without it, keys pressed during prompts are ignored.
//! - A key that is not in the menu is a failed attempt: `invalid_prompt` plays (if any), then the menu
//!   prompt again. No key within the timeout is a failed attempt too, with `timeout_prompt`.
//! - After [`MenuSpec::max_attempts`] failed attempts (3) the notice of the last failure still plays, then
//!   the menu ends with [`MenuAction::Default`]: the spec's default choice, or `None` (the caller goes to
//!   the service's queue).
//! - Keys `A`-`D` match case-insensitively. Inputs that do not fit the state (a digit after the end, a
//!   `prompt_finished` while waiting) are ignored.
//!
//! # States
//!
//! ```text
//!            start                  prompt_finished                    valid key
//!   Idle ───────────▶ MenuPrompt ─────────────────────▶ Waiting ─────────────────▶ Done: Chosen(c)
//!                     Play(prompt)                      until now + timeout
//!                       ▲     │                           │
//!                       │     │ key, barge-in:            │ invalid key, or handle_timeout at the deadline:
//!                       │     │ StopPlayback; valid key:  │ a failure (failures += 1)
//!                       │     │ Done: Chosen(c); else:    ▼
//!                       │     └──────────────────▶ ┌─────────────────────────────────────────────────────┐
//!                       │                          │ a notice prompt for it:    Notice, Play(notice)     │
//!                       ├───────────────────────── │ none, failures < max:      MenuPrompt, Play(prompt) │
//!                       │                          │ none, failures = max:      Done: Default(default)   │
//!                       │                          └─────────────────────────────────────────────────────┘
//!                       │   prompt_finished,                     ▲
//!                       └── failures < max ── Notice ────────────┘ key, barge-in: StopPlayback, as in Waiting
//!                                               │
//!                                               └── prompt_finished, failures = max ──▶ Done: Default(default)
//!
//!   Idle and Done ignore every input; without barge-in, MenuPrompt and Notice ignore keys.
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dtmf::event_from_digit;

/// How long the caller has to press a key after the menu prompt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed attempts (invalid key or no key) before the default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// What a menu key leads to. It travels with the call: the ACD uses `queue` and `skill`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MenuChoice {
    /// The choice's name, e.g. `"ko"`, `"en"`, `"traffic"` (for records and statistics).
    pub key: String,
    /// The queue the caller waits in, instead of the service's queue.
    pub queue: Option<String>,
    /// The skill the answering agent must have (e.g. the language).
    pub skill: Option<String>,
}

impl MenuChoice {
    pub fn new(key: impl Into<String>) -> MenuChoice {
        MenuChoice {
            key: key.into(),
            queue: None,
            skill: None,
        }
    }

    pub fn with_queue(mut self, queue: impl Into<String>) -> MenuChoice {
        self.queue = Some(queue.into());
        self
    }

    pub fn with_skill(mut self, skill: impl Into<String>) -> MenuChoice {
        self.skill = Some(skill.into());
        self
    }
}

/// A menu, as configured for a service. Shared by every call of the service (`Arc<MenuSpec>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MenuSpec {
    /// Prompt name of the menu itself ("for Korean press 1 ...").
    pub prompt: String,
    /// Key → choice.
    pub options: Vec<(char, MenuChoice)>,
    /// Time to press a key after the menu prompt has finished.
    pub timeout: Duration,
    /// Failed attempts before the default (at least 1).
    pub max_attempts: u32,
    /// Played after a key that is not in the menu.
    pub invalid_prompt: Option<String>,
    /// Played when no key came within the timeout.
    pub timeout_prompt: Option<String>,
    /// Chosen after `max_attempts` failures; `None`: the service's own queue.
    pub default: Option<MenuChoice>,
    /// Keys pressed during a prompt stop it and count.
    pub barge_in: bool,
}

/// Why a [`MenuSpec`] cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MenuError {
    #[error("menu has no prompt name (expected the name of the prompt that lists the options)")]
    NoPrompt,
    #[error("menu has no options (expected at least one key, e.g. '1' = \"ko\")")]
    NoOptions,
    #[error("menu key {key:?} of choice {choice:?} is not a DTMF key (expected 0-9, *, #, A-D)")]
    NotAKey { key: char, choice: String },
    #[error("menu key {key:?} is given twice: to {first:?} and to {second:?} (a key must lead to one choice)")]
    DuplicateKey {
        key: char,
        first: String,
        second: String,
    },
    #[error("menu timeout is 0 (expected at least 1 ms to press a key)")]
    ZeroTimeout,
    #[error("menu max_attempts is 0 (expected at least 1)")]
    ZeroAttempts,
}

impl MenuSpec {
    /// A menu with the defaults: 5 s timeout, 3 attempts, no notice prompts, no default choice, barge-in.
    pub fn new(prompt: impl Into<String>, options: Vec<(char, MenuChoice)>) -> MenuSpec {
        MenuSpec {
            prompt: prompt.into(),
            options,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            invalid_prompt: None,
            timeout_prompt: None,
            default: None,
            barge_in: true,
        }
    }

    /// Checks the spec (for profile validation). A [`Menu`] runs on any spec without panicking, but an
    /// invalid one would not do what was meant.
    pub fn validate(&self) -> Result<(), MenuError> {
        if self.prompt.is_empty() {
            return Err(MenuError::NoPrompt);
        }
        if self.options.is_empty() {
            return Err(MenuError::NoOptions);
        }
        for (i, (key, choice)) in self.options.iter().enumerate() {
            if event_from_digit(*key).is_none() {
                return Err(MenuError::NotAKey {
                    key: *key,
                    choice: choice.key.clone(),
                });
            }
            if let Some((_, first)) = self.options[..i]
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
            {
                return Err(MenuError::DuplicateKey {
                    key: *key,
                    first: first.key.clone(),
                    second: choice.key.clone(),
                });
            }
        }
        if self.timeout.is_zero() {
            return Err(MenuError::ZeroTimeout);
        }
        if self.max_attempts == 0 {
            return Err(MenuError::ZeroAttempts);
        }
        Ok(())
    }

    /// The choice of `key` (`a`-`d` match `A`-`D`).
    pub fn choice(&self, key: char) -> Option<&MenuChoice> {
        self.options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&key))
            .map(|(_, c)| c)
    }
}

/// What the call core must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MenuAction {
    /// Play this prompt to the caller (replacing whatever plays), then report `prompt_finished`.
    Play(String),
    /// Stop the prompt that plays (the caller barged in). No `prompt_finished` for it.
    StopPlayback,
    /// The caller chose. The menu is over.
    Chosen(MenuChoice),
    /// No valid choice after `max_attempts`: the spec's default, or `None` for the service's queue. The
    /// menu is over.
    Default(Option<MenuChoice>),
}

/// How the menu ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MenuOutcome {
    Chosen(MenuChoice),
    Default(Option<MenuChoice>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// The menu prompt plays.
    MenuPrompt,
    /// The menu prompt has finished; a key is awaited until the deadline.
    Waiting {
        deadline: Instant,
    },
    /// The invalid-key or timeout prompt plays; `last`: the default follows it.
    Notice {
        last: bool,
    },
    Done,
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    Invalid,
    Timeout,
}

/// One call's menu. See the module documentation.
#[derive(Debug)]
pub struct Menu {
    spec: Arc<MenuSpec>,
    state: State,
    failures: u32,
    actions: VecDeque<MenuAction>,
    outcome: Option<MenuOutcome>,
}

impl Menu {
    pub fn new(spec: Arc<MenuSpec>) -> Menu {
        Menu {
            spec,
            state: State::Idle,
            failures: 0,
            actions: VecDeque::with_capacity(4),
            outcome: None,
        }
    }

    pub fn spec(&self) -> &Arc<MenuSpec> {
        &self.spec
    }

    /// Starts the menu: [`MenuAction::Play`] of the menu prompt. Only the first call counts.
    pub fn start(&mut self, _now: Instant) {
        if self.state == State::Idle {
            self.play_menu();
        }
    }

    /// The prompt last asked for by [`MenuAction::Play`] has played to its end.
    pub fn prompt_finished(&mut self, now: Instant) {
        match self.state {
            State::MenuPrompt => {
                self.state = State::Waiting {
                    deadline: now + self.spec.timeout,
                }
            }
            State::Notice { last: false } => self.play_menu(),
            State::Notice { last: true } => self.finish_default(),
            State::Idle | State::Waiting { .. } | State::Done => {}
        }
    }

    /// The caller pressed `key` (from RFC 4733 or SIP INFO).
    pub fn digit(&mut self, _now: Instant, key: char) {
        match self.state {
            State::MenuPrompt | State::Notice { .. } => {
                if self.spec.barge_in {
                    self.actions.push_back(MenuAction::StopPlayback);
                    self.answer(key);
                }
            }
            State::Waiting { .. } => self.answer(key),
            State::Idle | State::Done => {}
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called: the end of the wait for a key.
    /// `None` while a prompt plays (its end is reported by `prompt_finished`) and when the menu is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// No key came in time: a failed attempt.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Waiting { deadline } = self.state {
            if now >= deadline {
                self.fail(Failure::Timeout);
            }
        }
    }

    /// The next thing to do; drain after every input.
    pub fn poll_action(&mut self) -> Option<MenuAction> {
        self.actions.pop_front()
    }

    /// Failed attempts so far (invalid keys and timeouts).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// True once the menu has ended (with a choice or the default).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How the menu ended, once it has.
    pub fn outcome(&self) -> Option<&MenuOutcome> {
        self.outcome.as_ref()
    }

    fn play_menu(&mut self) {
        self.actions
            .push_back(MenuAction::Play(self.spec.prompt.clone()));
        self.state = State::MenuPrompt;
    }

    fn answer(&mut self, key: char) {
        match self.spec.choice(key) {
            Some(c) => {
                let c = c.clone();
                self.actions.push_back(MenuAction::Chosen(c.clone()));
                self.outcome = Some(MenuOutcome::Chosen(c));
                self.state = State::Done;
            }
            None => self.fail(Failure::Invalid),
        }
    }

    fn fail(&mut self, why: Failure) {
        self.failures += 1;
        let last = self.failures >= self.spec.max_attempts.max(1);
        let notice = match why {
            Failure::Invalid => &self.spec.invalid_prompt,
            Failure::Timeout => &self.spec.timeout_prompt,
        };
        match notice {
            Some(p) => {
                self.actions.push_back(MenuAction::Play(p.clone()));
                self.state = State::Notice { last };
            }
            None if last => self.finish_default(),
            None => self.play_menu(),
        }
    }

    fn finish_default(&mut self) {
        let d = self.spec.default.clone();
        self.actions.push_back(MenuAction::Default(d.clone()));
        self.outcome = Some(MenuOutcome::Default(d));
        self.state = State::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MenuAction::*;

    /// The Korean centre's language menu: 1 Korean, 2 English, 3 Japanese, 4 Chinese.
    fn language_menu() -> MenuSpec {
        let lang = |key: &str| MenuChoice::new(key).with_skill(format!("lang-{key}"));
        let mut spec = MenuSpec::new(
            "menu-language",
            vec![
                ('1', lang("ko")),
                ('2', lang("en").with_queue("foreign")),
                ('3', lang("ja").with_queue("foreign")),
                ('4', lang("zh").with_queue("foreign")),
            ],
        );
        spec.invalid_prompt = Some("menu-invalid".into());
        spec.timeout_prompt = Some("menu-no-input".into());
        spec.default = Some(lang("ko"));
        spec
    }

    fn english() -> MenuChoice {
        MenuChoice::new("en")
            .with_skill("lang-en")
            .with_queue("foreign")
    }

    fn korean() -> MenuChoice {
        MenuChoice::new("ko").with_skill("lang-ko")
    }

    fn play(p: &str) -> MenuAction {
        Play(p.into())
    }

    /// Virtual time: a clock that only moves when told.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn drain(m: &mut Menu) -> Vec<MenuAction> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn started(spec: MenuSpec, c: &Clock) -> Menu {
        spec.validate().unwrap();
        let mut m = Menu::new(Arc::new(spec));
        m.start(c.at(0));
        assert_eq!(drain(&mut m), vec![play("menu-language")]);
        assert_eq!(m.poll_timeout(), None, "no timer while the prompt plays");
        m
    }

    #[test]
    fn caller_presses_2_after_the_prompt_and_gets_english() {
        let c = Clock(Instant::now());
        let mut m = started(language_menu(), &c);
        m.prompt_finished(c.at(6_000));
        assert_eq!(m.poll_timeout(), Some(c.at(11_000)));
        m.digit(c.at(7_500), '2');
        assert_eq!(drain(&mut m), vec![Chosen(english())]);
        assert!(m.is_done());
        assert_eq!(m.outcome(), Some(&MenuOutcome::Chosen(english())));
        assert_eq!(m.poll_timeout(), None);
        // Later keys change nothing.
        m.digit(c.at(8_000), '3');
        m.handle_timeout(c.at(20_000));
        assert_eq!(drain(&mut m), vec![]);
    }

    #[test]
    fn barge_in_stops_the_prompt_and_chooses() {
        let c = Clock(Instant::now());
        let mut m = started(language_menu(), &c);
        m.digit(c.at(1_200), '4');
        assert_eq!(
            drain(&mut m),
            vec![
                StopPlayback,
                Chosen(
                    MenuChoice::new("zh")
                        .with_skill("lang-zh")
                        .with_queue("foreign")
                )
            ]
        );
        // A finish report racing the stop is ignored.
        m.prompt_finished(c.at(1_210));
        assert_eq!(drain(&mut m), vec![]);
    }

    #[test]
    fn without_barge_in_keys_during_the_prompt_are_ignored() {
        let c = Clock(Instant::now());
        let mut spec = language_menu();
        spec.barge_in = false;
        let mut m = started(spec, &c);
        m.digit(c.at(1_000), '3');
        m.digit(c.at(2_000), '9');
        assert_eq!(drain(&mut m), vec![], "the prompt keeps playing");
        assert_eq!(m.failures(), 0);
        m.prompt_finished(c.at(6_000));
        m.digit(c.at(6_500), '3');
        assert_eq!(
            drain(&mut m),
            vec![Chosen(
                MenuChoice::new("ja")
                    .with_skill("lang-ja")
                    .with_queue("foreign")
            )]
        );
    }

    #[test]
    fn invalid_key_plays_the_notice_then_the_menu_again() {
        let c = Clock(Instant::now());
        let mut m = started(language_menu(), &c);
        m.prompt_finished(c.at(6_000));
        m.digit(c.at(7_000), '9');
        assert_eq!(drain(&mut m), vec![play("menu-invalid")]);
        assert_eq!(m.poll_timeout(), None);
        m.prompt_finished(c.at(9_000));
        assert_eq!(drain(&mut m), vec![play("menu-language")]);
        m.prompt_finished(c.at(15_000));
        m.digit(c.at(16_000), '1');
        assert_eq!(drain(&mut m), vec![Chosen(korean())]);
        assert_eq!(m.failures(), 1);
    }

    #[test]
    fn invalid_key_barging_in_stops_the_prompt_first() {
        let c = Clock(Instant::now());
        let mut m = started(language_menu(), &c);
        m.digit(c.at(500), '#');
        assert_eq!(drain(&mut m), vec![StopPlayback, play("menu-invalid")]);
        // A key during the notice barges in too and answers the menu.
        m.digit(c.at(900), '2');
        assert_eq!(drain(&mut m), vec![StopPlayback, Chosen(english())]);
    }

    #[test]
    fn silence_plays_the_timeout_notice_then_the_menu_again() {
        let c = Clock(Instant::now());
        let mut m = started(language_menu(), &c);
        m.prompt_finished(c.at(6_000));
        m.handle_timeout(c.at(10_999));
        assert_eq!(drain(&mut m), vec![], "5 s not yet over");
        m.handle_timeout(c.at(11_000));
        assert_eq!(drain(&mut m), vec![play("menu-no-input")]);
        m.prompt_finished(c.at(13_000));
        assert_eq!(drain(&mut m), vec![play("menu-language")]);
        m.prompt_finished(c.at(19_000));
        assert_eq!(m.poll_timeout(), Some(c.at(24_000)), "a fresh 5 s");
    }

    #[test]
    fn three_failures_lead_to_the_default_choice() {
        let c = Clock(Instant::now());
        let mut m = started(language_menu(), &c);
        // 1: invalid key.
        m.prompt_finished(c.at(6_000));
        m.digit(c.at(7_000), '0');
        assert_eq!(drain(&mut m), vec![play("menu-invalid")]);
        m.prompt_finished(c.at(8_000));
        assert_eq!(drain(&mut m), vec![play("menu-language")]);
        // 2: silence.
        m.prompt_finished(c.at(14_000));
        m.handle_timeout(c.at(19_000));
        assert_eq!(drain(&mut m), vec![play("menu-no-input")]);
        m.prompt_finished(c.at(20_000));
        assert_eq!(drain(&mut m), vec![play("menu-language")]);
        // 3: silence again: the notice, then the default.
        m.prompt_finished(c.at(26_000));
        let t = m.poll_timeout().unwrap();
        m.handle_timeout(t);
        assert_eq!(drain(&mut m), vec![play("menu-no-input")]);
        assert!(!m.is_done());
        m.prompt_finished(c.at(32_000));
        assert_eq!(drain(&mut m), vec![Default(Some(korean()))]);
        assert!(m.is_done());
        assert_eq!(m.failures(), 3);
        assert_eq!(m.outcome(), Some(&MenuOutcome::Default(Some(korean()))));
    }

    #[test]
    fn without_default_or_notices_the_caller_goes_to_the_service_queue() {
        let c = Clock(Instant::now());
        let mut spec = language_menu();
        spec.default = None;
        spec.invalid_prompt = None;
        spec.timeout_prompt = None;
        spec.max_attempts = 2;
        spec.timeout = Duration::from_secs(3);
        let mut m = started(spec, &c);
        m.prompt_finished(c.at(6_000));
        m.digit(c.at(6_100), '7');
        assert_eq!(
            drain(&mut m),
            vec![play("menu-language")],
            "straight back to the menu"
        );
        m.prompt_finished(c.at(12_000));
        assert_eq!(m.poll_timeout(), Some(c.at(15_000)));
        m.handle_timeout(c.at(15_000));
        assert_eq!(drain(&mut m), vec![Default(None)]);
        assert!(m.is_done());
    }

    #[test]
    fn a_late_timer_after_a_choice_does_nothing() {
        let c = Clock(Instant::now());
        let mut m = started(language_menu(), &c);
        m.prompt_finished(c.at(6_000));
        let t = m.poll_timeout().unwrap();
        m.digit(c.at(10_999), 'a'); // not in this menu: invalid
        assert_eq!(drain(&mut m), vec![play("menu-invalid")]);
        m.handle_timeout(t);
        assert_eq!(drain(&mut m), vec![], "the old deadline no longer applies");
    }

    #[test]
    fn letter_keys_match_either_case() {
        let c = Clock(Instant::now());
        let spec = MenuSpec::new(
            "menu-subject",
            vec![
                ('A', MenuChoice::new("traffic").with_queue("traffic")),
                ('#', MenuChoice::new("repeat")),
            ],
        );
        spec.validate().unwrap();
        let mut m = Menu::new(Arc::new(spec));
        m.start(c.at(0));
        m.start(c.at(1)); // a second start is ignored
        assert_eq!(drain(&mut m), vec![play("menu-subject")]);
        m.prompt_finished(c.at(3_000));
        m.digit(c.at(3_500), 'a');
        assert_eq!(
            drain(&mut m),
            vec![Chosen(MenuChoice::new("traffic").with_queue("traffic"))]
        );
    }

    #[test]
    fn inputs_before_start_are_ignored() {
        let c = Clock(Instant::now());
        let mut m = Menu::new(Arc::new(language_menu()));
        m.digit(c.at(0), '1');
        m.prompt_finished(c.at(0));
        m.handle_timeout(c.at(100_000));
        assert_eq!(drain(&mut m), vec![]);
        assert_eq!(m.poll_timeout(), None);
        assert!(!m.is_done());
    }

    #[test]
    fn spec_validation_says_what_is_wrong() {
        assert_eq!(language_menu().validate(), Ok(()));
        let d = MenuSpec::new("m", vec![]);
        assert_eq!(
            (d.timeout, d.max_attempts, d.barge_in),
            (Duration::from_secs(5), 3, true)
        );
        assert_eq!(d.validate(), Err(MenuError::NoOptions));
        assert_eq!(
            MenuSpec::new("", vec![('1', MenuChoice::new("ko"))]).validate(),
            Err(MenuError::NoPrompt)
        );
        assert_eq!(
            MenuSpec::new("m", vec![('x', MenuChoice::new("ko"))]).validate(),
            Err(MenuError::NotAKey {
                key: 'x',
                choice: "ko".into()
            })
        );
        let dup = MenuSpec::new(
            "m",
            vec![('b', MenuChoice::new("ko")), ('B', MenuChoice::new("en"))],
        );
        let e = dup.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "menu key 'B' is given twice: to \"ko\" and to \"en\" (a key must lead to one choice)"
        );
        let mut s = language_menu();
        s.timeout = Duration::ZERO;
        assert_eq!(s.validate(), Err(MenuError::ZeroTimeout));
        let mut s = language_menu();
        s.max_attempts = 0;
        assert_eq!(s.validate(), Err(MenuError::ZeroAttempts));
    }

    #[test]
    fn zero_attempts_behaves_as_one() {
        let c = Clock(Instant::now());
        let mut spec = language_menu();
        spec.max_attempts = 0;
        spec.invalid_prompt = None;
        let mut m = Menu::new(Arc::new(spec));
        m.start(c.at(0));
        m.prompt_finished(c.at(1));
        m.digit(c.at(2), '8');
        assert_eq!(
            drain(&mut m),
            vec![play("menu-language"), Default(Some(korean()))]
        );
    }
}
