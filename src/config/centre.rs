//! The call-centre part of a tenant file: `[[queue]]`, `[[agent]]`, `[[agent_range]]`, `[[menu]]`,
//! `[[schedule]]`, validated into the types the ACD, the registrar and the call core are built from.
//!
//! These are config-side types: `crate::config` does not depend on `crate::acd`; the ACD converts
//! [`QueueCfg`] / [`AgentCfg`] into its own specs. Durations are whole seconds in the files.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, Problem};
use super::hash::{from_hex, ha1_md5, ha1_sha256};
use super::raw::{self, List, S};
use super::schedule::{CivilDate, HolidayDate, ScheduleCfg, TimeRange, Weekday};
use super::{in_range, is_name, is_text, prompt_name, Src};

/// How a queue chooses among its ready agents (the ACD implements each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The agent idle longest since their last call (the default; what civil-service centres use).
    #[default]
    LongestIdle,
    /// In turn, continuing after the agent who took the last call.
    RoundRobin,
    /// The agent with the fewest calls today.
    FewestCalls,
    /// The agent with the least talk time today.
    LeastTalk,
    /// Every ready agent at once; the first to answer takes it.
    RingAll,
    /// Always in the same order (lowest penalty, then file order).
    Linear,
    /// A random ready agent.
    Random,
}

impl Strategy {
    /// The name as written in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::LongestIdle => "longest_idle",
            Strategy::RoundRobin => "round_robin",
            Strategy::FewestCalls => "fewest_calls",
            Strategy::LeastTalk => "least_talk",
            Strategy::RingAll => "ring_all",
            Strategy::Linear => "linear",
            Strategy::Random => "random",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `on_max_wait` as written; [`OnMaxWaitCfg`] carries its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum OnMaxWaitKind {
    Hangup,
    Callback,
    Overflow,
    Message,
}

impl OnMaxWaitKind {
    fn name(self) -> &'static str {
        match self {
            OnMaxWaitKind::Hangup => "hangup",
            OnMaxWaitKind::Callback => "callback",
            OnMaxWaitKind::Overflow => "overflow",
            OnMaxWaitKind::Message => "message",
        }
    }
}

/// What happens to a caller whose `max_wait` ran out.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum OnMaxWaitCfg {
    /// Move to this queue of the same tenant (keeping priority; the wait there starts again).
    Overflow(String),
    /// Play these prompts, then hang up.
    Message(Vec<String>),
    /// Offer a callback (keep the place, hang up, be called back).
    Callback,
    /// Hang up (the default).
    #[default]
    Hangup,
}

/// A skill a queue's agents must have: `level` or better, relaxed as the caller's wait grows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillReqCfg {
    pub skill: String,
    /// 1 to 100.
    pub level: u8,
    /// After waiting `.0`, agents with level `.1` or better qualify. Strictly later and strictly lower
    /// step by step; level 0 means the skill is no longer required at all.
    pub relax: Vec<(Duration, u8)>,
}

/// `[[queue]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueCfg {
    pub tenant: String,
    pub name: String,
    pub strategy: Strategy,
    /// All must hold. (A menu choice's skill adds one at level 1 in the ACD unless listed here.)
    pub skills: Vec<SkillReqCfg>,
    /// Callers waiting at most; a caller beyond is refused ("full"). None: unlimited.
    pub max_len: Option<usize>,
    pub max_wait: Option<Duration>,
    /// Hangup unless `max_wait` is set and `on_max_wait` says otherwise.
    pub on_max_wait: OnMaxWaitCfg,
    /// Callers may join while no agent of the queue is logged in. Default true.
    pub join_empty: bool,
    /// Waiting callers leave when the last agent logs out. Default false.
    pub leave_empty: bool,
    /// How long an agent's phone rings before the next agent is tried. Default 15 s.
    pub ring_timeout: Duration,
    /// After-call work time. Default 10 s.
    pub wrapup: Duration,
    /// Consecutive unanswered offers after which the agent goes not-ready ("missed"); 0 = never. Default 2.
    pub max_misses: u32,
    /// Service-level threshold: answered within it counts as "in service level". Default 20 s (KS).
    pub sl_threshold: Duration,
    /// Abandons sooner than this are short abandons (counted apart). Default 5 s.
    pub short_abandon: Duration,
    /// Period of position/expected-wait announcements; None: never. Default 30 s.
    pub announce_every: Option<Duration>,
    /// Prompts looped while waiting. Default `["music"]` if `audio_dir/music.wav` exists, else none
    /// (the media engine then sends its comfort stream).
    pub music: Vec<String>,
    /// The key that requests a callback while waiting. None (default): no callback offer.
    pub callback_key: Option<char>,
    /// Announcements include the caller's position (else only the expected wait). Default true.
    pub announce_position: bool,
}

impl QueueCfg {
    /// A queue with the defaults.
    pub fn new(tenant: &str, name: &str) -> QueueCfg {
        QueueCfg {
            tenant: tenant.to_string(),
            name: name.to_string(),
            strategy: Strategy::LongestIdle,
            skills: Vec::new(),
            max_len: None,
            max_wait: None,
            on_max_wait: OnMaxWaitCfg::Hangup,
            join_empty: true,
            leave_empty: false,
            ring_timeout: Duration::from_secs(15),
            wrapup: Duration::from_secs(10),
            max_misses: 2,
            sl_threshold: Duration::from_secs(20),
            short_abandon: Duration::from_secs(5),
            announce_every: Some(Duration::from_secs(30)),
            music: Vec::new(),
            callback_key: None,
            announce_position: true,
        }
    }
}

/// `[[agent]]` (or one agent of an `[[agent_range]]`). The password is not kept: only its HA1 values.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCfg {
    pub tenant: String,
    /// Unique in the realm. Defaults to the extension.
    pub id: String,
    /// The SIP user name the softphone registers with (digest username). Unique in the realm.
    pub extension: String,
    pub name: String,
    /// MD5(extension:realm:password).
    pub ha1_md5: [u8; 16],
    /// SHA-256(extension:realm:password).
    pub ha1_sha256: [u8; 32],
    /// Skill → level (1 to 100), sorted by skill.
    pub skills: Vec<(String, u8)>,
    /// Queue → penalty (lower is offered first), sorted by penalty then name. Never empty.
    pub queues: Vec<(String, u32)>,
    /// Log in and become ready when the phone registers; log out when the last binding goes.
    pub login_on_register: bool,
    /// Offers ask the phone to answer at once (`Call-Info: answer-after=0`). Off: the phone rings
    /// until the counsellor (or the desktop, with `call.answer`) answers.
    pub auto_answer: bool,
}

impl fmt::Debug for AgentCfg {
    /// HA1 values are password equivalents for digest: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCfg")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("extension", &self.extension)
            .field("name", &self.name)
            .field("ha1_md5", &"<redacted>")
            .field("ha1_sha256", &"<redacted>")
            .field("skills", &self.skills)
            .field("queues", &self.queues)
            .field("login_on_register", &self.login_on_register)
            .field("auto_answer", &self.auto_answer)
            .finish()
    }
}

impl AgentCfg {
    pub fn skill(&self, skill: &str) -> Option<u8> {
        self.skills.iter().find(|(s, _)| s == skill).map(|(_, l)| *l)
    }

    /// The agent's penalty in `queue`, if it serves it.
    pub fn penalty(&self, queue: &str) -> Option<u32> {
        self.queues.iter().find(|(q, _)| q == queue).map(|(_, p)| *p)
    }
}

/// What one menu key leads to. Travels with the call (records, ACD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MenuOptionCfg {
    /// The choice's name in records and statistics, e.g. `"ko"`, `"en"`, `"traffic"` (TOML `label`;
    /// `key` as in `media::menu::MenuChoice::key`, not the DTMF key).
    pub key: String,
    /// The queue instead of the service's queue.
    pub queue: Option<String>,
    /// The skill the answering agent must have.
    pub skill: Option<String>,
}

/// `[[menu]]`: a DTMF menu after the guidance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MenuCfg {
    pub name: String,
    /// The prompt that lists the options.
    pub prompt: String,
    /// Key (0-9 * # A-D, upper case) → choice, in file order.
    pub options: Vec<(char, MenuOptionCfg)>,
    /// Time to press a key after the prompt. Default 5 s.
    pub timeout: Duration,
    /// Failed attempts (invalid key or none) before the default. Default 3.
    pub max_attempts: u32,
    pub invalid_prompt: Option<String>,
    pub timeout_prompt: Option<String>,
    /// The key chosen after `max_attempts` failures; None: the service's own queue.
    pub default: Option<char>,
    /// A key pressed during a prompt stops it and counts. Default true.
    pub barge_in: bool,
}

impl MenuCfg {
    pub fn option(&self, key: char) -> Option<&MenuOptionCfg> {
        let key = key.to_ascii_uppercase();
        self.options.iter().find(|(k, _)| *k == key).map(|(_, o)| o)
    }
}

/// A tenant's queues, agents, menus and schedules, validated.
#[derive(Default)]
pub(super) struct Centre {
    pub queues: Vec<QueueCfg>,
    pub agents: Vec<AgentCfg>,
    pub menus: Vec<MenuCfg>,
    pub schedules: Vec<ScheduleCfg>,
}

/// Where an agent id or extension was first defined in a realm.
pub(super) struct RealmOwner {
    pub tenant: String,
    pub file: std::path::PathBuf,
    pub line: usize,
}

/// Agent ids and extensions per realm, across tenants: `(realm, id)` / `(realm, extension)`.
#[derive(Default)]
pub(super) struct RealmUsers {
    pub ids: HashMap<(String, String), RealmOwner>,
    pub extensions: HashMap<(String, String), RealmOwner>,
}

/// One character of `0-9 * # A-D` (a-d accepted), upper-cased.
pub(super) fn dtmf_key(s: &str) -> Option<char> {
    let mut it = s.trim().chars();
    let c = it.next()?;
    if it.next().is_some() {
        return None;
    }
    match c.to_ascii_uppercase() {
        c @ ('0'..='9' | '*' | '#' | 'A'..='D') => Some(c),
        _ => None,
    }
}

/// Most agents an `[[agent_range]]` may define.
const MAX_RANGE: u64 = 10_000;

pub(super) struct CentreLoader<'a> {
    pub src: &'a Src,
    pub tenant: &'a str,
    pub realm: &'a str,
    pub audio_dir: &'a Path,
}

impl CentreLoader<'_> {
    fn at(&self, span: std::ops::Range<usize>, p: Problem) -> ConfigError {
        self.src.at(span, p)
    }

    fn name(&self, v: &S<String>, what: &'static str) -> Result<String, ConfigError> {
        let n = v.get_ref().trim();
        if !is_name(n) {
            return Err(self.at(v.span(), Problem::BadName { what, value: v.get_ref().clone() }));
        }
        Ok(n.to_string())
    }

    fn prompts(&self, list: &List<String>, owner: &str, key: &'static str) -> Result<Vec<String>, ConfigError> {
        list.get_ref().iter().map(|v| prompt_name(self.src, v, owner, key, self.audio_dir)).collect()
    }

    fn secs(&self, v: &S<u64>, key: &'static str, min: u64, max: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(in_range(self.src, v, key, min, max)?))
    }

    pub fn load(&self, f: &raw::TenantFile, users: &mut RealmUsers) -> Result<Centre, ConfigError> {
        let schedules = self.schedules(&f.schedule)?;
        let mut queues = self.queues(&f.queue)?;
        let agents = self.agents(f, &queues, users)?;

        // Skills the tenant's agents have: a requirement nobody meets is almost always a typo.
        let known_skills: BTreeSet<&str> =
            agents.iter().flat_map(|a| a.skills.iter().map(|(s, _)| s.as_str())).collect();
        for (q, rq) in queues.iter().zip(&f.queue) {
            for (req, rr) in q.skills.iter().zip(&rq.skills) {
                if !known_skills.contains(req.skill.as_str()) {
                    return Err(self.at(
                        rr.skill.span(),
                        Problem::UnknownSkill {
                            owner: format!("queue {:?}", q.name),
                            skill: req.skill.clone(),
                            tenant: self.tenant.to_string(),
                            known: known_skills.iter().map(|s| s.to_string()).collect(),
                        },
                    ));
                }
            }
        }
        let menus = self.menus(&f.menu, &queues, &known_skills)?;
        // Default music (only once the file is known to exist).
        for (q, rq) in queues.iter_mut().zip(&f.queue) {
            if rq.music.is_none() && self.audio_dir.join("music.wav").is_file() {
                q.music = vec!["music".to_string()];
            }
        }
        Ok(Centre { queues, agents, menus, schedules })
    }

    fn unknown_queue(&self, v: &S<String>, owner: String, queues: &[QueueCfg]) -> ConfigError {
        self.at(
            v.span(),
            Problem::UnknownQueue {
                owner,
                queue: v.get_ref().clone(),
                tenant: self.tenant.to_string(),
                known: queues.iter().map(|q| q.name.clone()).collect(),
            },
        )
    }

    fn queues(&self, raw: &[raw::QueueTable]) -> Result<Vec<QueueCfg>, ConfigError> {
        let mut out: Vec<QueueCfg> = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for rq in raw {
            let name = self.name(&rq.name, "queue")?;
            if let Some(&first_line) = lines.get(&name) {
                return Err(self.at(rq.name.span(), Problem::DuplicateName { what: "queue", name, first_line }));
            }
            lines.insert(name.clone(), self.src.line(rq.name.span()));
            let mut q = QueueCfg::new(self.tenant, &name);
            let owner = format!("queue {name:?}");
            if let Some(v) = &rq.strategy {
                q.strategy = *v.get_ref();
            }
            for (i, sr) in rq.skills.iter().enumerate() {
                q.skills.push(self.skill_req(&name, sr, &rq.skills[..i])?);
            }
            if let Some(v) = &rq.max_len {
                q.max_len = Some(in_range(self.src, v, "queue.max_len", 1, 100_000)? as usize);
            }
            if let Some(v) = &rq.max_wait {
                q.max_wait = Some(self.secs(v, "queue.max_wait", 1, 86_400)?);
            }
            let kind = rq.on_max_wait.as_ref().map(|v| *v.get_ref());
            if let (Some(v), None) = (&rq.on_max_wait, &rq.max_wait) {
                return Err(self.at(v.span(), Problem::OnMaxWaitWithoutMaxWait { queue: name }));
            }
            let kind_name = kind.map_or("hangup", OnMaxWaitKind::name);
            if let Some(v) = &rq.overflow_queue {
                if kind != Some(OnMaxWaitKind::Overflow) {
                    return Err(self.at(
                        v.span(),
                        Problem::OnMaxWaitUnused {
                            queue: name,
                            key: "overflow_queue",
                            needs: "overflow",
                            on_max_wait: kind_name,
                        },
                    ));
                }
            }
            if let Some(v) = &rq.max_wait_prompts {
                if kind != Some(OnMaxWaitKind::Message) {
                    return Err(self.at(
                        v.span(),
                        Problem::OnMaxWaitUnused {
                            queue: name,
                            key: "max_wait_prompts",
                            needs: "message",
                            on_max_wait: kind_name,
                        },
                    ));
                }
            }
            q.on_max_wait = match (kind, &rq.on_max_wait) {
                (None, _) | (Some(OnMaxWaitKind::Hangup), _) => OnMaxWaitCfg::Hangup,
                (Some(OnMaxWaitKind::Callback), _) => OnMaxWaitCfg::Callback,
                (Some(OnMaxWaitKind::Overflow), Some(v)) => match &rq.overflow_queue {
                    // Checked against the tenant's queues below, once all are known.
                    Some(o) => OnMaxWaitCfg::Overflow(self.name(o, "queue")?),
                    None => {
                        return Err(self.at(
                            v.span(),
                            Problem::OnMaxWaitNeeds { queue: name, on_max_wait: "overflow", key: "overflow_queue" },
                        ))
                    }
                },
                (Some(OnMaxWaitKind::Message), Some(v)) => {
                    let prompts = match &rq.max_wait_prompts {
                        Some(list) => self.prompts(list, &owner, "max_wait_prompts")?,
                        None => Vec::new(),
                    };
                    if prompts.is_empty() {
                        let span = rq.max_wait_prompts.as_ref().map_or(v.span(), |l| l.span());
                        return Err(self.at(
                            span,
                            Problem::OnMaxWaitNeeds { queue: name, on_max_wait: "message", key: "max_wait_prompts" },
                        ));
                    }
                    OnMaxWaitCfg::Message(prompts)
                }
                (Some(_), None) => unreachable!("kind comes from on_max_wait"),
            };
            if let Some(v) = &rq.join_empty {
                q.join_empty = *v.get_ref();
            }
            if let Some(v) = &rq.leave_empty {
                q.leave_empty = *v.get_ref();
            }
            if let Some(v) = &rq.ring_timeout {
                q.ring_timeout = self.secs(v, "queue.ring_timeout", 1, 600)?;
            }
            if let Some(v) = &rq.wrapup {
                q.wrapup = self.secs(v, "queue.wrapup", 0, 3600)?;
            }
            if let Some(v) = &rq.max_misses {
                q.max_misses = in_range(self.src, v, "queue.max_misses", 0, 100)? as u32;
            }
            if let Some(v) = &rq.sl_threshold {
                q.sl_threshold = self.secs(v, "queue.sl_threshold", 1, 3600)?;
            }
            if let Some(v) = &rq.short_abandon {
                q.short_abandon = self.secs(v, "queue.short_abandon", 0, 600)?;
            }
            if let Some(v) = &rq.announce_every {
                let d = self.secs(v, "queue.announce_every", 0, 3600)?;
                q.announce_every = (!d.is_zero()).then_some(d);
            }
            if let Some(v) = &rq.announce_position {
                q.announce_position = *v.get_ref();
            }
            if let Some(list) = &rq.music {
                q.music = self.prompts(list, &owner, "music")?;
            }
            if let Some(v) = &rq.callback_key {
                q.callback_key = Some(dtmf_key(v.get_ref()).ok_or_else(|| {
                    self.at(
                        v.span(),
                        Problem::BadDtmfKey { owner: format!("{owner} callback_key"), value: v.get_ref().clone() },
                    )
                })?);
            }
            out.push(q);
        }

        // Overflow targets exist, and overflow never loops.
        for (q, rq) in out.iter().zip(raw) {
            if let (OnMaxWaitCfg::Overflow(target), Some(v)) = (&q.on_max_wait, &rq.overflow_queue) {
                if !out.iter().any(|x| &x.name == target) {
                    return Err(self.unknown_queue(v, format!("queue {:?} overflow_queue", q.name), &out));
                }
                let mut path = vec![q.name.clone()];
                let mut at = target.clone();
                loop {
                    if path.contains(&at) {
                        path.push(at);
                        return Err(self.at(v.span(), Problem::OverflowLoop { queue: q.name.clone(), path }));
                    }
                    path.push(at.clone());
                    match out.iter().find(|x| x.name == at).map(|x| &x.on_max_wait) {
                        Some(OnMaxWaitCfg::Overflow(next)) => at = next.clone(),
                        _ => break,
                    }
                }
            }
        }
        Ok(out)
    }

    fn skill_req(
        &self,
        queue: &str,
        r: &raw::SkillReqTable,
        before: &[raw::SkillReqTable],
    ) -> Result<SkillReqCfg, ConfigError> {
        let skill = self.name(&r.skill, "skill")?;
        if let Some(b) = before.iter().find(|b| b.skill.get_ref().trim() == skill) {
            let first_line = self.src.line(b.skill.span());
            return Err(
                self.at(r.skill.span(), Problem::DuplicateName { what: "skill requirement", name: skill, first_line })
            );
        }
        let owner = format!("queue {queue:?}");
        let level = self.level(&r.level, &owner, &skill, 1)?;
        let mut relax = Vec::new();
        let (mut prev_after, mut prev_level) = (0u64, level);
        for step in &r.relax {
            let after = in_range(self.src, &step.after, "queue.skills.relax.after", 1, 86_400)?;
            let l = self.level(&step.level, &owner, &skill, 0)?;
            if after <= prev_after {
                return Err(self.at(
                    step.after.span(),
                    Problem::RelaxNotLater { queue: queue.to_string(), skill, after, previous: prev_after },
                ));
            }
            if l >= prev_level {
                return Err(self.at(
                    step.level.span(),
                    Problem::RelaxNotLower { queue: queue.to_string(), skill, level: prev_level, relax: l },
                ));
            }
            relax.push((Duration::from_secs(after), l));
            (prev_after, prev_level) = (after, l);
        }
        Ok(SkillReqCfg { skill, level, relax })
    }

    fn level(&self, v: &S<u64>, owner: &str, skill: &str, min: u8) -> Result<u8, ConfigError> {
        let value = *v.get_ref();
        if value < u64::from(min) || value > 100 {
            return Err(self.at(
                v.span(),
                Problem::LevelOutOfRange { owner: owner.to_string(), skill: skill.to_string(), value, min, max: 100 },
            ));
        }
        Ok(value as u8)
    }

    /// Skills and queues of an agent (or a range).
    #[allow(clippy::type_complexity)]
    fn skills_and_queues(
        &self,
        agent: &str,
        skills: &std::collections::BTreeMap<String, S<u64>>,
        qs: &std::collections::BTreeMap<String, S<u64>>,
        queues: &[QueueCfg],
        span: std::ops::Range<usize>,
    ) -> Result<(Vec<(String, u8)>, Vec<(String, u32)>), ConfigError> {
        let owner = format!("agent {agent:?}");
        let mut sk = Vec::new();
        for (name, v) in skills {
            if !is_name(name) {
                return Err(self.at(v.span(), Problem::BadName { what: "skill", value: name.clone() }));
            }
            sk.push((name.clone(), self.level(v, &owner, name, 1)?));
        }
        let mut qv = Vec::new();
        for (name, v) in qs {
            if !queues.iter().any(|q| &q.name == name) {
                return Err(self.at(
                    v.span(),
                    Problem::UnknownQueue {
                        owner: owner.clone(),
                        queue: name.clone(),
                        tenant: self.tenant.to_string(),
                        known: queues.iter().map(|q| q.name.clone()).collect(),
                    },
                ));
            }
            qv.push((name.clone(), in_range(self.src, v, "agent.queues penalty", 0, 1000)? as u32));
        }
        if qv.is_empty() {
            return Err(self.at(span, Problem::AgentWithoutQueues { agent: agent.to_string() }));
        }
        qv.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok((sk, qv))
    }

    /// Records the agent's id and extension in its realm, refusing duplicates. The spans are where the
    /// id and the extension are written.
    fn claim(
        &self,
        users: &mut RealmUsers,
        (id, id_span): (&str, std::ops::Range<usize>),
        (extension, ext_span): (&str, std::ops::Range<usize>),
    ) -> Result<(), ConfigError> {
        let realm = self.realm.to_string();
        if let Some(o) = users.ids.get(&(realm.clone(), id.to_string())) {
            return Err(self.at(
                id_span,
                Problem::DuplicateAgent {
                    id: id.to_string(),
                    realm,
                    tenant: o.tenant.clone(),
                    file: o.file.clone(),
                    line: o.line,
                },
            ));
        }
        if let Some(o) = users.extensions.get(&(realm.clone(), extension.to_string())) {
            return Err(self.at(
                ext_span,
                Problem::DuplicateExtension {
                    extension: extension.to_string(),
                    realm,
                    tenant: o.tenant.clone(),
                    file: o.file.clone(),
                    line: o.line,
                },
            ));
        }
        let owner = |span| RealmOwner {
            tenant: self.tenant.to_string(),
            file: self.src.file.clone(),
            line: self.src.line(span),
        };
        users.ids.insert((realm.clone(), id.to_string()), owner(id_span));
        users.extensions.insert((realm, extension.to_string()), owner(ext_span));
        Ok(())
    }

    fn agents(
        &self,
        f: &raw::TenantFile,
        queues: &[QueueCfg],
        users: &mut RealmUsers,
    ) -> Result<Vec<AgentCfg>, ConfigError> {
        let mut out = Vec::new();
        for ra in &f.agent {
            let extension = self.name(&ra.extension, "agent extension")?;
            let id = match &ra.id {
                Some(v) => self.name(v, "agent id")?,
                None => extension.clone(),
            };
            let name = match &ra.name {
                Some(v) => super::text(self.src, v, "agent.name")?,
                None => id.clone(),
            };
            let (ha1_md5, ha1_sha256) = match (&ra.password, &ra.ha1_md5, &ra.ha1_sha256) {
                (Some(p), None, None) => {
                    let pw = p.get_ref();
                    if pw.is_empty() || pw.chars().any(char::is_control) {
                        return Err(self.at(p.span(), Problem::BadPassword { agent: id }));
                    }
                    (ha1_md5(&extension, self.realm, pw), ha1_sha256(&extension, self.realm, pw))
                }
                (Some(p), _, _) => return Err(self.at(p.span(), Problem::PasswordAndHash { agent: id })),
                (None, Some(m), Some(s)) => {
                    let m = from_hex::<16>(m.get_ref()).ok_or_else(|| {
                        self.at(m.span(), Problem::BadHa1 { agent: id.clone(), key: "ha1_md5", digits: 32 })
                    })?;
                    let s = from_hex::<32>(s.get_ref()).ok_or_else(|| {
                        self.at(s.span(), Problem::BadHa1 { agent: id.clone(), key: "ha1_sha256", digits: 64 })
                    })?;
                    (m, s)
                }
                (None, Some(m), None) => {
                    return Err(self.at(m.span(), Problem::IncompleteHa1 { agent: id, missing: "ha1_sha256" }))
                }
                (None, None, Some(s)) => {
                    return Err(self.at(s.span(), Problem::IncompleteHa1 { agent: id, missing: "ha1_md5" }))
                }
                (None, None, None) => return Err(self.at(ra.extension.span(), Problem::NoCredentials { agent: id })),
            };
            let (skills, qs) = self.skills_and_queues(&id, &ra.skills, &ra.queues, queues, ra.extension.span())?;
            let id_span = ra.id.as_ref().map_or(ra.extension.span(), |v| v.span());
            self.claim(users, (&id, id_span), (&extension, ra.extension.span()))?;
            out.push(AgentCfg {
                tenant: self.tenant.to_string(),
                id,
                extension,
                name,
                ha1_md5,
                ha1_sha256,
                skills,
                queues: qs,
                login_on_register: ra.login_on_register.as_ref().is_some_and(|v| *v.get_ref()),
                auto_answer: ra.auto_answer.as_ref().is_none_or(|v| *v.get_ref()),
            });
        }
        for rr in &f.agent_range {
            let (from, to) = (*rr.from.get_ref(), *rr.to.get_ref());
            if from > to {
                return Err(self.at(rr.to.span(), Problem::BadAgentRange { from, to, why: "to is below from" }));
            }
            if to - from >= MAX_RANGE {
                return Err(self.at(
                    rr.to.span(),
                    Problem::BadAgentRange { from, to, why: "more than 10000 agents in one range" },
                ));
            }
            let prefix = rr.password_prefix.get_ref();
            if prefix.is_empty() || prefix.chars().any(char::is_control) {
                return Err(self.at(rr.password_prefix.span(), Problem::BadPassword { agent: format!("{from}-{to}") }));
            }
            let name_prefix = match &rr.name_prefix {
                Some(v) if v.get_ref().chars().any(char::is_control) => {
                    return Err(self
                        .at(v.span(), Problem::BadText { key: "agent_range.name_prefix", value: v.get_ref().clone() }))
                }
                Some(v) => v.get_ref().clone(),
                None => "Agent ".to_string(),
            };
            let label = format!("{from}-{to}");
            let (skills, qs) = self.skills_and_queues(&label, &rr.skills, &rr.queues, queues, rr.from.span())?;
            for n in from..=to {
                let ext = n.to_string();
                self.claim(users, (&ext, rr.from.span()), (&ext, rr.from.span()))?;
                let pw = format!("{prefix}{ext}");
                out.push(AgentCfg {
                    tenant: self.tenant.to_string(),
                    id: ext.clone(),
                    name: format!("{name_prefix}{ext}"),
                    ha1_md5: ha1_md5(&ext, self.realm, &pw),
                    ha1_sha256: ha1_sha256(&ext, self.realm, &pw),
                    extension: ext,
                    skills: skills.clone(),
                    queues: qs.clone(),
                    login_on_register: rr.login_on_register.as_ref().is_some_and(|v| *v.get_ref()),
                    auto_answer: rr.auto_answer.as_ref().is_none_or(|v| *v.get_ref()),
                });
            }
        }
        Ok(out)
    }

    fn menus(
        &self,
        raw: &[raw::MenuTable],
        queues: &[QueueCfg],
        skills: &BTreeSet<&str>,
    ) -> Result<Vec<MenuCfg>, ConfigError> {
        let mut out: Vec<MenuCfg> = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for rm in raw {
            let name = self.name(&rm.name, "menu")?;
            if let Some(&first_line) = lines.get(&name) {
                return Err(self.at(rm.name.span(), Problem::DuplicateName { what: "menu", name, first_line }));
            }
            lines.insert(name.clone(), self.src.line(rm.name.span()));
            let owner = format!("menu {name:?}");
            let prompt = prompt_name(self.src, &rm.prompt, &owner, "prompt", self.audio_dir)?;
            let mut options: Vec<(char, MenuOptionCfg)> = Vec::new();
            let mut key_lines: HashMap<char, usize> = HashMap::new();
            for ro in &rm.option {
                let key = dtmf_key(ro.key.get_ref()).ok_or_else(|| {
                    self.at(
                        ro.key.span(),
                        Problem::BadDtmfKey { owner: format!("{owner} option"), value: ro.key.get_ref().clone() },
                    )
                })?;
                if let Some(&first_line) = key_lines.get(&key) {
                    return Err(self.at(ro.key.span(), Problem::DuplicateMenuKey { menu: name, key, first_line }));
                }
                key_lines.insert(key, self.src.line(ro.key.span()));
                let label = self.name(&ro.label, "menu option label")?;
                let queue = match &ro.queue {
                    Some(v) => {
                        let q = v.get_ref().trim();
                        if !queues.iter().any(|x| x.name == q) {
                            return Err(self.unknown_queue(v, format!("{owner} key '{key}'"), queues));
                        }
                        Some(q.to_string())
                    }
                    None => None,
                };
                let skill = match &ro.skill {
                    Some(v) => {
                        let s = self.name(v, "skill")?;
                        if !skills.contains(s.as_str()) {
                            return Err(self.at(
                                v.span(),
                                Problem::UnknownSkill {
                                    owner: format!("{owner} key '{key}'"),
                                    skill: s,
                                    tenant: self.tenant.to_string(),
                                    known: skills.iter().map(|s| s.to_string()).collect(),
                                },
                            ));
                        }
                        Some(s)
                    }
                    None => None,
                };
                options.push((key, MenuOptionCfg { key: label, queue, skill }));
            }
            if options.is_empty() {
                return Err(self.at(rm.name.span(), Problem::NoMenuOptions { menu: name }));
            }
            let timeout = match &rm.timeout {
                Some(v) => self.secs(v, "menu.timeout", 1, 60)?,
                None => Duration::from_secs(5),
            };
            let max_attempts = match &rm.max_attempts {
                Some(v) => in_range(self.src, v, "menu.max_attempts", 1, 10)? as u32,
                None => 3,
            };
            let opt_prompt = |v: &Option<S<String>>, key: &'static str| -> Result<Option<String>, ConfigError> {
                v.as_ref().map(|v| prompt_name(self.src, v, &owner, key, self.audio_dir)).transpose()
            };
            let invalid_prompt = opt_prompt(&rm.invalid_prompt, "invalid_prompt")?;
            let timeout_prompt = opt_prompt(&rm.timeout_prompt, "timeout_prompt")?;
            let default = match &rm.default {
                Some(v) => {
                    let key = dtmf_key(v.get_ref()).ok_or_else(|| {
                        self.at(
                            v.span(),
                            Problem::BadDtmfKey { owner: format!("{owner} default"), value: v.get_ref().clone() },
                        )
                    })?;
                    if !options.iter().any(|(k, _)| *k == key) {
                        let keys: Vec<String> = options.iter().map(|(k, _)| k.to_string()).collect();
                        return Err(self
                            .at(v.span(), Problem::MenuDefaultNotAnOption { menu: name, key, keys: keys.join(", ") }));
                    }
                    Some(key)
                }
                None => None,
            };
            let barge_in = rm.barge_in.as_ref().is_none_or(|v| *v.get_ref());
            out.push(MenuCfg {
                name,
                prompt,
                options,
                timeout,
                max_attempts,
                invalid_prompt,
                timeout_prompt,
                default,
                barge_in,
            });
        }
        Ok(out)
    }

    fn schedules(&self, raw: &[raw::ScheduleTable]) -> Result<Vec<ScheduleCfg>, ConfigError> {
        let mut out = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for rs in raw {
            let name = self.name(&rs.name, "schedule")?;
            if let Some(&first_line) = lines.get(&name) {
                return Err(self.at(rs.name.span(), Problem::DuplicateName { what: "schedule", name, first_line }));
            }
            lines.insert(name.clone(), self.src.line(rs.name.span()));
            let mut s = ScheduleCfg { name: name.clone(), ..Default::default() };
            let days = [&rs.mon, &rs.tue, &rs.wed, &rs.thu, &rs.fri, &rs.sat, &rs.sun];
            for (day, list) in Weekday::ALL.iter().zip(days) {
                if let Some(list) = list {
                    s.weekly[day.index()] = self.hours(&name, day.key(), list)?;
                }
            }
            let mut seen: HashMap<HolidayDate, usize> = HashMap::new();
            for v in &rs.holidays {
                let h = HolidayDate::parse(v.get_ref()).map_err(|why| {
                    self.at(
                        v.span(),
                        Problem::BadDate { schedule: name.clone(), key: "holidays", value: v.get_ref().clone(), why },
                    )
                })?;
                if let Some(&first_line) = seen.get(&h) {
                    return Err(self.at(
                        v.span(),
                        Problem::DuplicateDate { schedule: name, key: "holiday", date: h.to_string(), first_line },
                    ));
                }
                seen.insert(h, self.src.line(v.span()));
                s.holidays.push(h);
            }
            if let Some(list) = &rs.holiday_hours {
                s.holiday_hours = self.hours(&name, "holiday_hours", list)?;
            }
            let mut seen: HashMap<CivilDate, usize> = HashMap::new();
            for o in &rs.overrides {
                let d = CivilDate::parse(o.date.get_ref()).map_err(|why| {
                    self.at(
                        o.date.span(),
                        Problem::BadDate {
                            schedule: name.clone(),
                            key: "override date",
                            value: o.date.get_ref().clone(),
                            why,
                        },
                    )
                })?;
                if let Some(&first_line) = seen.get(&d) {
                    return Err(self.at(
                        o.date.span(),
                        Problem::DuplicateDate { schedule: name, key: "override", date: d.to_string(), first_line },
                    ));
                }
                seen.insert(d, self.src.line(o.date.span()));
                let hours = self.hours(&name, &format!("override {d}"), &o.hours)?;
                s.overrides.push((d, hours));
            }
            out.push(s);
        }
        Ok(out)
    }

    fn hours(&self, schedule: &str, key: &str, list: &List<String>) -> Result<Vec<TimeRange>, ConfigError> {
        let mut out = Vec::new();
        for v in list.get_ref() {
            let r = TimeRange::parse(v.get_ref()).map_err(|why| {
                self.at(
                    v.span(),
                    Problem::BadTimeRange {
                        schedule: schedule.to_string(),
                        key: key.to_string(),
                        value: v.get_ref().clone(),
                        why,
                    },
                )
            })?;
            out.push(r);
        }
        out.sort_by_key(|r| (r.start, r.end));
        Ok(out)
    }
}

/// Whether `s` is fit for a digest realm (a quoted-string without escapes).
pub(super) fn is_realm(s: &str) -> bool {
    is_text(s) && !s.contains(['"', '\\'])
}
