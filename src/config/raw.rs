//! The files as written: serde shapes with spans, before validation.
//!
//! Every table denies unknown keys so that a typo is an error, not a silently ignored setting.
//! Values that are checked after deserialising are `Spanned` so that the error can name their line.
//!
//! Tenant files are designed to grow: later versions add `[[queue]]`, `[[agent]]` and `[schedule]`
//! tables next to `[tenant]` and `[[service]]` as further fields of [`TenantFile`].

use serde::Deserialize;
use toml::Spanned;

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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenTable {
    pub sip: Option<S<String>>,
    pub http: Option<S<String>>,
    pub transports: Option<List<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct MediaTable {
    pub address: Option<S<String>>,
    pub rtp_ports: Option<S<String>>,
    pub ptime: Option<S<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsTable {
    pub database: Option<S<String>>,
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
}

/// `tenants/NAME.toml`: one centre.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantFile {
    pub tenant: TenantTable,
    #[serde(default)]
    pub service: Vec<S<ServiceTable>>,
    // Later: queue: Vec<QueueTable>, agent: Vec<AgentTable>, schedule: Option<ScheduleTable>.
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantTable {
    pub id: S<String>,
    pub name: S<String>,
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
}
