//! The files as written: serde shapes with spans, before validation.
//!
//! Every table denies unknown keys so that a typo is an error, not a silently ignored setting.
//! Values that are checked after deserialising are `Spanned` so that the error can name their line.
//!
//! Tenant files hold `[tenant]`, `[[service]]`, `[[queue]]`, `[[agent]]`, `[[agent_range]]`, `[[menu]]`
//! and `[[schedule]]`: each a field of [`TenantFile`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::centre::{OnMaxWaitKind, Strategy};

pub(super) type S<T> = Spanned<T>;
pub(super) type List<T> = Spanned<Vec<Spanned<T>>>;

/// `callgate.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct EdgeFile {
    pub audio_dir: Option<S<String>>,
    #[serde(default)]
    pub listen: ListenTable,
    #[serde(default)]
    pub media: MediaTable,
    #[serde(default)]
    pub records: RecordsTable,
    #[serde(default)]
    pub limits: LimitsTable,
    #[serde(default)]
    pub sip: SipTable,
    /// `[[principal]]`: who may use the CTI socket.
    #[serde(default)]
    pub principal: Vec<PrincipalTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PrincipalTable {
    pub name: S<String>,
    pub role: S<String>,
    pub tenant: Option<S<String>>,
    pub agent: Option<S<String>>,
    pub token: Option<S<String>>,
    pub token_sha256: Option<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenTable {
    pub sip: Option<S<String>>,
    pub http: Option<S<String>>,
    pub cti_tcp: Option<S<String>>,
    pub transports: Option<List<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct MediaTable {
    pub address: Option<S<String>>,
    pub rtp_ports: Option<S<String>>,
    pub ptime: Option<S<u32>>,
    pub inactivity: Option<S<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsTable {
    pub database: Option<S<String>>,
    pub recordings_dir: Option<S<String>>,
    pub recording_retention_days: Option<S<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsTable {
    pub max_calls: Option<S<u64>>,
    pub retry_after: Option<S<u64>>,
    pub max_message_bytes: Option<S<u64>>,
    pub max_cps: Option<S<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SipTable {
    pub t1: Option<S<u64>>,
    pub t2: Option<S<u64>>,
    pub t4: Option<S<u64>>,
    pub user_agent: Option<S<String>>,
    pub digest_algorithms: Option<S<Vec<String>>>,
}

/// `trunks.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TrunksFile {
    #[serde(default)]
    pub trunk: Vec<TrunkTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrunkTable {
    pub name: S<String>,
    pub tenant: Option<S<String>>,
    pub networks: List<String>,
    pub codecs: Option<List<String>>,
    #[serde(default)]
    pub numbers: Vec<S<String>>,
    pub outbound: Option<S<String>>,
}

/// `tenants/NAME.toml`: one centre.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantFile {
    pub tenant: TenantTable,
    #[serde(default)]
    pub service: Vec<S<ServiceTable>>,
    #[serde(default)]
    pub queue: Vec<QueueTable>,
    #[serde(default)]
    pub agent: Vec<AgentTable>,
    #[serde(default)]
    pub agent_range: Vec<AgentRangeTable>,
    #[serde(default)]
    pub menu: Vec<MenuTable>,
    #[serde(default)]
    pub schedule: Vec<ScheduleTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantTable {
    pub id: S<String>,
    pub name: S<String>,
    pub realm: Option<S<String>>,
    pub utc_offset: Option<S<String>>,
    pub recordings_dir: Option<S<String>>,
    pub recording_retention_days: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceTable {
    pub number: S<String>,
    pub name: S<String>,
    #[serde(default)]
    pub guidance: Vec<S<String>>,
    pub queue: Option<S<String>>,
    pub bridge_to: Option<S<String>>,
    pub early_media: Option<S<bool>>,
    pub menu: Option<S<String>>,
    pub schedule: Option<S<String>>,
    pub closed: Option<List<String>>,
    pub closed_callback: Option<S<bool>>,
    pub record: Option<S<bool>>,
    pub priority: Option<S<u64>>,
}

/// `[[queue]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueTable {
    pub name: S<String>,
    pub strategy: Option<S<Strategy>>,
    #[serde(default)]
    pub skills: Vec<SkillReqTable>,
    pub max_len: Option<S<u64>>,
    pub max_wait: Option<S<u64>>,
    pub on_max_wait: Option<S<OnMaxWaitKind>>,
    pub overflow_queue: Option<S<String>>,
    pub max_wait_prompts: Option<List<String>>,
    pub join_empty: Option<S<bool>>,
    pub leave_empty: Option<S<bool>>,
    pub ring_timeout: Option<S<u64>>,
    pub wrapup: Option<S<u64>>,
    pub max_misses: Option<S<u64>>,
    pub sl_threshold: Option<S<u64>>,
    pub short_abandon: Option<S<u64>>,
    pub announce_every: Option<S<u64>>,
    pub announce_position: Option<S<bool>>,
    pub music: Option<List<String>>,
    pub callback_key: Option<S<String>>,
}

/// One required skill of a queue: `{ skill = "en", level = 5, relax = [{ after = 30, level = 3 }] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SkillReqTable {
    pub skill: S<String>,
    pub level: S<u64>,
    #[serde(default)]
    pub relax: Vec<RelaxTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RelaxTable {
    pub after: S<u64>,
    pub level: S<u64>,
}

/// `[[agent]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentTable {
    pub extension: S<String>,
    pub id: Option<S<String>>,
    pub name: Option<S<String>>,
    pub password: Option<S<String>>,
    pub ha1_md5: Option<S<String>>,
    pub ha1_sha256: Option<S<String>>,
    #[serde(default)]
    pub skills: BTreeMap<String, S<u64>>,
    #[serde(default)]
    pub queues: BTreeMap<String, S<u64>>,
    pub login_on_register: Option<S<bool>>,
    pub auto_answer: Option<S<bool>>,
}

/// `[[agent_range]]`: agents `from`..=`to`, each with the number as id and extension.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentRangeTable {
    pub from: S<u64>,
    pub to: S<u64>,
    pub password_prefix: S<String>,
    pub name_prefix: Option<S<String>>,
    #[serde(default)]
    pub skills: BTreeMap<String, S<u64>>,
    #[serde(default)]
    pub queues: BTreeMap<String, S<u64>>,
    pub login_on_register: Option<S<bool>>,
    pub auto_answer: Option<S<bool>>,
}

/// `[[menu]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MenuTable {
    pub name: S<String>,
    pub prompt: S<String>,
    #[serde(default)]
    pub option: Vec<MenuOptionTable>,
    pub timeout: Option<S<u64>>,
    pub max_attempts: Option<S<u64>>,
    pub invalid_prompt: Option<S<String>>,
    pub timeout_prompt: Option<S<String>>,
    pub default: Option<S<String>>,
    pub barge_in: Option<S<bool>>,
}

/// `[[menu.option]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MenuOptionTable {
    pub key: S<String>,
    pub label: S<String>,
    pub queue: Option<S<String>>,
    pub skill: Option<S<String>>,
}

/// `[[schedule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleTable {
    pub name: S<String>,
    pub mon: Option<List<String>>,
    pub tue: Option<List<String>>,
    pub wed: Option<List<String>>,
    pub thu: Option<List<String>>,
    pub fri: Option<List<String>>,
    pub sat: Option<List<String>>,
    pub sun: Option<List<String>>,
    #[serde(default)]
    pub holidays: Vec<S<String>>,
    pub holiday_hours: Option<List<String>>,
    #[serde(default, rename = "override")]
    pub overrides: Vec<OverrideTable>,
}

/// `[[schedule.override]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideTable {
    pub date: S<String>,
    pub hours: List<String>,
}
