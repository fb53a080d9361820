//! Profiles: loading and validating the TOML under `sip-profiles/`.
//!
//! A profile is a directory:
//!
//! ```text
//! sip-profiles/NAME/
//!   callgate.toml        edge-wide: [listen] [media] [records] [limits] [sip], audio_dir
//!   trunks.toml          [[trunk]]: who may send calls (source networks), codecs, numbers
//!   tenants/*.toml       one file per centre: [tenant], its [[service]] numbers, and its call
//!                        centre: [[queue]] [[agent]] [[agent_range]] [[menu]] [[schedule]]
//! ```
//!
//! Everything edge-wide has a default, so `callgate.toml` may be empty. [`Profile::load`] either returns
//! a fully validated [`Profile`] or the first problem as a [`ConfigError`] naming `FILE:LINE`.
//! Unknown keys are errors everywhere (typos must not be silently ignored).
//!
//! Routing: a call's source address picks the trunk ([`Profile::trunk_for`]: the first trunk whose
//! networks contain it); the dialled number picks the service ([`Profile::service_for`]), within the
//! trunk's tenant if it names one and within its `numbers` if it lists any. Service numbers are unique
//! across all tenants, so a number never routes ambiguously.
//!
//! Within a tenant, names refer to the same tenant only: a service's `queue`, `menu` and `schedule`, an
//! agent's `queues`, a menu option's `queue`. Agent ids and extensions are unique per digest realm
//! (tenants sharing a realm share one namespace of users), and passwords are hashed at load
//! ([`hash`]): the profile in memory holds HA1 values only.

mod centre;
mod error;
pub mod hash;
mod ipnet;
mod raw;
pub mod schedule;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The audio codecs (G.711 PCMU/PCMA) are the media module's: one type for profiles and SDP.
pub use crate::media::Codec;
pub use centre::{AgentCfg, MenuCfg, MenuOptionCfg, OnMaxWaitCfg, QueueCfg, SkillReqCfg, Strategy};
pub use error::{ConfigError, NumberError, PortRangeError, Problem};
pub use hash::{ha1_md5, ha1_sha256};
pub use ipnet::{IpNet, IpNetError};
pub use schedule::{
    format_utc_offset, local_date, parse_utc_offset, CivilDate, DateError, HolidayDate, ScheduleCfg, TimeRange,
    TimeRangeError, Weekday,
};

use crate::sip::Transport;
use raw::{List, S};

/// Packet times the media engine can send (ms): today only its fixed frame time.
pub const SUPPORTED_PTIMES: &[u32] = &[crate::media::PTIME_MS];

/// A validated profile.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// The profile directory, as given to [`Profile::load`].
    pub dir: PathBuf,
    pub listen: Listen,
    pub media: MediaCfg,
    pub records: RecordsCfg,
    pub limits: Limits,
    pub sip: SipCfg,
    /// Where prompts live: `audio_dir/NAME.wav`. Resolved against the profile directory.
    pub audio_dir: PathBuf,
    /// In file order: the first whose networks contain a caller's address wins.
    pub trunks: Vec<Trunk>,
    /// In file-name order of `tenants/*.toml`.
    pub tenants: Vec<Tenant>,
    /// `[[principal]]` of callgate.toml: who may use the CTI socket, with which role.
    pub principals: Vec<PrincipalCfg>,
}

/// A CTI principal: a person or a program with a token. The token itself is never kept: only its
/// SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct PrincipalCfg {
    pub name: String,
    /// "agent", "supervisor", "integration" or "admin".
    pub role: String,
    /// The tenant it belongs to (required for agent and supervisor).
    pub tenant: Option<String>,
    /// The agent id an agent principal acts as.
    pub agent: Option<String>,
    pub token_sha256: [u8; 32],
}

impl std::fmt::Debug for PrincipalCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalCfg")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tenant", &self.tenant)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

/// `[listen]`: the sockets the edge binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// SIP on every transport in `transports`. Default 127.0.0.1:5060.
    pub sip: SocketAddr,
    /// Metrics and health over HTTP. Default 127.0.0.1:8080.
    pub http: SocketAddr,
    /// Default UDP and TCP.
    pub transports: Vec<Transport>,
    /// The CTI protocol as JSON lines over TCP (local integrations; tokens travel in clear text, so
    /// keep it on loopback or a trusted network). Default: none (WebSocket and the Unix socket only).
    pub cti_tcp: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Listen {
        Listen {
            sip: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
            http: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            transports: vec![Transport::Udp, Transport::Tcp],
            cti_tcp: None,
        }
    }
}

/// `[media]`: RTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaCfg {
    /// Bound for RTP and written into SDP (c=). Default: the IP of `listen.sip`.
    pub address: IpAddr,
    /// Inclusive. Default 20000-29999.
    pub rtp_ports: (u16, u16),
    /// Default 20.
    pub ptime_ms: u32,
    /// A call with no RTP from a party for this long (seconds) is ended, and its record says so.
    /// 0 = never. Default 60. (TOML key `inactivity`.)
    pub inactivity_s: u32,
}

impl MediaCfg {
    /// [`MediaCfg::inactivity_s`] as a duration; None when 0 (never).
    pub fn inactivity(&self) -> Option<Duration> {
        (self.inactivity_s > 0).then(|| Duration::from_secs(u64::from(self.inactivity_s)))
    }
}

impl Default for MediaCfg {
    fn default() -> MediaCfg {
        MediaCfg { address: IpAddr::V4(Ipv4Addr::LOCALHOST), rtp_ports: (20000, 29999), ptime_ms: 20, inactivity_s: 60 }
    }
}

/// `[records]`: where call records and recordings go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordsCfg {
    /// Where call records, the queue log and pending callbacks are kept, as the profile gives it:
    /// an SQLite file (relative paths are resolved against the working directory; default
    /// var/callgate.db), or a PostgreSQL connection string — `postgres://USER@HOST:PORT/DBNAME`,
    /// `postgresql://...`, or libpq key/value `host=... port=... user=... dbname=...` — checked at load
    /// (see `records::Database::parse`, which `records::RecordWriter::open` applies to this value). It
    /// may hold a password: print it with `records::Database`'s Display, which leaves it out.
    pub database: PathBuf,
    /// Call recordings (WAV). Resolved at load: a relative `recordings_dir` is relative to the directory
    /// of the profile's `database` file (with PostgreSQL, to `var`, where the default SQLite file would
    /// be). Default `recordings`, i.e. `var/recordings`. Each tenant's
    /// recordings go to a subdirectory named by its id unless the tenant names its own directory
    /// ([`Profile::recordings_dir_for`]).
    pub recordings_dir: PathBuf,
    /// Recordings older than this many days are deleted; 0 = kept forever. Default 90. A tenant may
    /// set its own.
    pub recording_retention_days: u32,
}

impl RecordsCfg {
    /// A path relative to the database file's directory (absolute paths unchanged). A PostgreSQL
    /// database has no directory: `var`, the default database's.
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        if self.database.to_str().is_some_and(crate::records::Database::is_postgres) {
            return Path::new("var").join(p);
        }
        match self.database.parent() {
            Some(dir) => dir.join(p),
            None => p.to_path_buf(),
        }
    }
}

impl Default for RecordsCfg {
    fn default() -> RecordsCfg {
        RecordsCfg {
            database: PathBuf::from("var/callgate.db"),
            recordings_dir: PathBuf::from("var/recordings"),
            recording_retention_days: 90,
        }
    }
}

/// `[limits]`: overload protection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Calls in progress at once; beyond it new INVITEs get 503 with Retry-After. Default 1000.
    pub max_calls: usize,
    /// The Retry-After (seconds) of those 503s. Default 5.
    pub retry_after_s: u32,
    /// Largest SIP message accepted (bytes); larger stream messages close the connection. Default 65535.
    pub max_message_bytes: usize,
    /// New calls accepted per second (a token bucket with one second of burst); 0 = no limit.
    pub max_cps: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_calls: 1000, retry_after_s: 5, max_message_bytes: 65535, max_cps: 0 }
    }
}

/// `[sip]`: protocol settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipCfg {
    /// RFC 3261 timers in milliseconds. Defaults 500, 4000, 5000.
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// User-Agent and Server header value. Default `callgate/VERSION`.
    pub user_agent: String,
    /// The digest algorithms the registrar's 401 offers, in order: "MD5", "SHA-256". Default
    /// `["MD5"]`: baresip 1.0 and SIPp 3.6 give up on a 401 that offers SHA-256 at all.
    pub digest_algorithms: Vec<String>,
}

impl SipCfg {
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }
    pub fn t2(&self) -> Duration {
        Duration::from_millis(self.t2_ms)
    }
    pub fn t4(&self) -> Duration {
        Duration::from_millis(self.t4_ms)
    }
}

impl Default for SipCfg {
    fn default() -> SipCfg {
        SipCfg { t1_ms: 500, t2_ms: 4000, t4_ms: 5000, user_agent: default_user_agent(), digest_algorithms: vec!["MD5".into()] }
    }
}

fn default_user_agent() -> String {
    concat!("callgate/", env!("CARGO_PKG_VERSION")).to_string()
}

/// `[[trunk]]` in trunks.toml: a carrier (or PBX) allowed to send calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    /// Calls on this trunk reach only this tenant's services. None: any tenant's.
    pub tenant: Option<String>,
    /// Source prefixes; never empty.
    pub networks: Vec<IpNet>,
    /// Audio codecs in order of preference; never empty. telephone-event is always offered/accepted.
    pub codecs: Vec<Codec>,
    /// Normalised. Empty = any number of the tenants this trunk may reach.
    pub numbers: Vec<String>,
    /// Where callgate sends the calls it places itself (callbacks, integrations' outbound calls) when
    /// no call has come in on the trunk since the start: a `sip:` URI with an IP address.
    pub outbound: Option<String>,
}

/// One centre (`tenants/NAME.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub services: Vec<Service>,
    /// Digest realm of its agents' registrations. Default `"callgate"`.
    pub realm: String,
    /// Local time = UTC + this many minutes (schedules, "today" in statistics). Default 540 (KST, +09:00).
    pub utc_offset_min: i32,
    pub queues: Vec<QueueCfg>,
    /// `[[agent]]` tables first, then the agents of each `[[agent_range]]` in order.
    pub agents: Vec<AgentCfg>,
    pub menus: Vec<MenuCfg>,
    pub schedules: Vec<ScheduleCfg>,
    /// The tenant's own recordings directory (resolved at load like `records.recordings_dir`: relative
    /// to the database file's directory). None: `records.recordings_dir/ID`. Use
    /// [`Profile::recordings_dir_for`].
    pub recordings_dir: Option<PathBuf>,
    /// Days recordings are kept; 0 = forever. Default: `records.recording_retention_days` (90).
    pub recording_retention_days: u32,
}

/// The default digest realm.
pub const DEFAULT_REALM: &str = "callgate";
/// The default UTC offset of tenants: Korea (+09:00), in minutes.
pub const DEFAULT_UTC_OFFSET_MIN: i32 = 540;

impl Tenant {
    pub fn queue(&self, name: &str) -> Option<&QueueCfg> {
        self.queues.iter().find(|q| q.name == name)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentCfg> {
        self.agents.iter().find(|a| a.id == id)
    }

    pub fn agent_by_extension(&self, extension: &str) -> Option<&AgentCfg> {
        self.agents.iter().find(|a| a.extension == extension)
    }

    pub fn menu(&self, name: &str) -> Option<&MenuCfg> {
        self.menus.iter().find(|m| m.name == name)
    }

    pub fn schedule(&self, name: &str) -> Option<&ScheduleCfg> {
        self.schedules.iter().find(|s| s.name == name)
    }

    /// Whether `service` (of this tenant) is open at `unix_ms`: always without a schedule.
    pub fn is_open(&self, service: &Service, unix_ms: i64) -> bool {
        match service.schedule.as_deref().and_then(|n| self.schedule(n)) {
            Some(s) => s.is_open(unix_ms, self.utc_offset_min),
            None => true,
        }
    }

    /// When `service` next opens or closes after `unix_ms` (None: open 24/7, or no change within
    /// [`schedule::NEXT_CHANGE_HORIZON_DAYS`]).
    pub fn next_change(&self, service: &Service, unix_ms: i64) -> Option<i64> {
        service
            .schedule
            .as_deref()
            .and_then(|n| self.schedule(n))
            .and_then(|s| s.next_change(unix_ms, self.utc_offset_min))
    }
}

/// `[[service]]`: a number callers dial and what happens then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The owning tenant's id.
    pub tenant: String,
    /// Normalised.
    pub number: String,
    pub name: String,
    /// Prompt names played in order after answering: files `audio_dir/NAME.wav`.
    pub guidance: Vec<String>,
    pub queue: Option<String>,
    /// SIP URI: B2BUA straight to a fixed destination, no announcement.
    pub bridge_to: Option<String>,
    /// Play the guidance (and menu, and closed message) as early media in a 183 before answering.
    /// Default false: answer (200) first.
    pub early_media: bool,
    /// A `[[menu]]` of the tenant played after the guidance.
    pub menu: Option<String>,
    /// A `[[schedule]]` of the tenant; None: open 24/7.
    pub schedule: Option<String>,
    /// Prompts played outside the schedule's hours, then the call ends (or a callback is offered).
    pub closed: Vec<String>,
    /// Outside hours, offer a callback request after the closed prompts. Default false.
    pub closed_callback: bool,
    /// Record calls of this service (stereo WAV: caller left, agent right). Default false.
    pub record: bool,
    /// Caller priority in the queue: higher is served first, before waiting time. Default 0.
    pub priority: u8,
}

/// Visual separators a number may be written with: removed by [`normalise_number`].
const SEPARATORS: &[char] = &['-', '.', '(', ')', ' '];

/// The number as routed: visual separators (`- . ( )` and spaces) removed; everything else, including
/// a leading `+` (global number, `tel:` style), kept. `"031-909-9000"` -> `"0319099000"`.
pub fn normalise_number(s: &str) -> String {
    s.chars().filter(|c| !SEPARATORS.contains(c)).collect()
}

fn normalise_cow(s: &str) -> Cow<'_, str> {
    if s.contains(SEPARATORS) {
        Cow::Owned(normalise_number(s))
    } else {
        Cow::Borrowed(s)
    }
}

/// Validates a number as written in a profile and returns it normalised: digits, `*`, `#`, a leading
/// `+`, and visual separators.
pub fn parse_number(s: &str) -> Result<String, NumberError> {
    let n = normalise_number(s);
    for (i, ch) in n.chars().enumerate() {
        match ch {
            '0'..='9' | '*' | '#' => {}
            '+' if i == 0 => {}
            '+' => return Err(NumberError::MisplacedPlus),
            _ => return Err(NumberError::BadChar { ch }),
        }
    }
    if !n.chars().any(|c| c != '+') {
        return Err(NumberError::Empty);
    }
    Ok(n)
}

impl Profile {
    /// Loads and validates the profile in `dir`. The error names the file and line at fault.
    pub fn load(dir: &Path) -> Result<Profile, ConfigError> {
        Loader::new(dir).load()
    }

    /// The first trunk (in file order) whose networks contain `src`. IPv4 callers arriving as
    /// v4-mapped IPv6 addresses match IPv4 prefixes.
    pub fn trunk_for(&self, src: IpAddr) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.networks.iter().any(|n| n.contains(src)))
    }

    /// The service a call on `trunk` to `number` reaches: the service with that (normalised) number,
    /// only among the trunk's tenant's services if the trunk names a tenant, and only if the number is
    /// in the trunk's `numbers` when that list is not empty.
    pub fn service_for(&self, trunk: &Trunk, number: &str) -> Option<&Service> {
        let n = normalise_cow(number);
        let n = n.as_ref();
        if !trunk.numbers.is_empty() && !trunk.numbers.iter().any(|x| x == n) {
            return None;
        }
        self.tenants
            .iter()
            .filter(|t| trunk.tenant.as_deref().is_none_or(|id| id == t.id))
            .flat_map(|t| t.services.iter())
            .find(|s| s.number == n)
    }

    /// Every prompt name the profile uses, each once, in order of first use: per tenant, the services'
    /// guidance and closed prompts, then the menus' prompts, then the queues' music and max-wait messages.
    pub fn prompt_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |p: &String| {
            if !out.contains(p) {
                out.push(p.clone());
            }
        };
        for t in &self.tenants {
            for s in &t.services {
                s.guidance.iter().chain(&s.closed).for_each(&mut add);
            }
            for m in &t.menus {
                add(&m.prompt);
                m.invalid_prompt.iter().chain(&m.timeout_prompt).for_each(&mut add);
            }
            for q in &t.queues {
                q.music.iter().for_each(&mut add);
                if let OnMaxWaitCfg::Message(p) = &q.on_max_wait {
                    p.iter().for_each(&mut add);
                }
            }
        }
        out
    }

    /// Where `tenant`'s recordings go: its own `recordings_dir`, else `records.recordings_dir/ID`.
    pub fn recordings_dir_for(&self, tenant: &Tenant) -> PathBuf {
        match &tenant.recordings_dir {
            Some(d) => d.clone(),
            None => self.records.recordings_dir.join(&tenant.id),
        }
    }

    /// Every agent of every tenant (the registrar's users, the ACD's agents).
    pub fn agents(&self) -> impl Iterator<Item = &AgentCfg> {
        self.tenants.iter().flat_map(|t| t.agents.iter())
    }

    /// The tenant with this id.
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// The path of a prompt's file: `audio_dir/NAME.wav`.
    pub fn prompt_path(&self, name: &str) -> PathBuf {
        self.audio_dir.join(format!("{name}.wav"))
    }

    /// A short human summary (what `callgate check` prints).
    pub fn summary(&self) -> Summary {
        Summary {
            dir: self.dir.clone(),
            tenants: self.tenants.len(),
            services: self.tenants.iter().map(|t| t.services.len()).sum(),
            trunks: self.trunks.len(),
            prompts: self.prompt_names().len(),
            text: summary_text(self),
        }
    }

    /// `callgate check --profile DIR`: loads the profile and summarises it.
    pub fn check(dir: &Path) -> Result<Summary, ConfigError> {
        Profile::load(dir).map(|p| p.summary())
    }
}

/// `callgate check --profile DIR`: loads the profile and summarises it.
pub fn check(dir: &Path) -> Result<Summary, ConfigError> {
    Profile::check(dir)
}

/// What a valid profile holds, for humans. `Display` prints the multi-line report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub dir: PathBuf,
    pub tenants: usize,
    pub services: usize,
    pub trunks: usize,
    pub prompts: usize,
    text: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn summary_text(p: &Profile) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let services: usize = p.tenants.iter().map(|t| t.services.len()).sum();
    let _ = writeln!(
        s,
        "profile {}: OK: {} tenant(s), {} service(s), {} trunk(s)",
        p.dir.display(),
        p.tenants.len(),
        services,
        p.trunks.len()
    );
    let transports: Vec<&str> = p.listen.transports.iter().map(|t| t.as_via()).collect();
    let _ = writeln!(s, "  sip      {} ({})", p.listen.sip, transports.join(", "));
    let _ = writeln!(s, "  http     {}", p.listen.http);
    let _ = writeln!(
        s,
        "  media    {} ports {}-{}, ptime {} ms",
        p.media.address, p.media.rtp_ports.0, p.media.rtp_ports.1, p.media.ptime_ms
    );
    let _ = writeln!(
        s,
        "  records  {}; recordings in {}, kept {}",
        // The PostgreSQL form without its password.
        crate::records::Database::from_path(&p.records.database)
            .map_or_else(|_| p.records.database.display().to_string(), |d| d.to_string()),
        p.records.recordings_dir.display(),
        retention(p.records.recording_retention_days)
    );
    let _ = writeln!(
        s,
        "  media    inactivity {}",
        match p.media.inactivity_s {
            0 => "never ends a call".to_string(),
            n => format!("ends a call after {n} s without RTP"),
        }
    );
    let _ = writeln!(
        s,
        "  limits   {} calls, {} calls/s, Retry-After {} s, messages up to {} bytes",
        p.limits.max_calls,
        if p.limits.max_cps == 0 { "unlimited".to_owned() } else { p.limits.max_cps.to_string() },
        p.limits.retry_after_s,
        p.limits.max_message_bytes
    );
    let _ = writeln!(s, "  prompts  {} in {}", p.prompt_names().join(", "), p.audio_dir.display());
    let _ = writeln!(s, "trunks:");
    for t in &p.trunks {
        let nets: Vec<String> = t.networks.iter().map(|n| n.to_string()).collect();
        let codecs: Vec<&str> = t.codecs.iter().map(|c| c.name()).collect();
        let numbers = if t.numbers.is_empty() { "any number".to_string() } else { t.numbers.join(", ") };
        let tenant = match &t.tenant {
            Some(id) => format!("tenant {id}"),
            None => "any tenant".to_string(),
        };
        let _ = writeln!(s, "  {}: from {}; {}; {}; {}", t.name, nets.join(", "), codecs.join(", "), numbers, tenant);
    }
    let _ = writeln!(s, "tenants:");
    for t in &p.tenants {
        let _ = writeln!(
            s,
            "  {} ({}): realm {}, UTC{}, {} queue(s), {} agent(s), {} menu(s), {} schedule(s)",
            t.id,
            t.name,
            t.realm,
            format_utc_offset(t.utc_offset_min),
            t.queues.len(),
            t.agents.len(),
            t.menus.len(),
            t.schedules.len()
        );
        for q in &t.queues {
            let serving = t.agents.iter().filter(|a| a.penalty(&q.name).is_some()).count();
            let _ = writeln!(
                s,
                "    queue {}: {}, ring {} s, wrap-up {} s, {} agent(s)",
                q.name,
                q.strategy,
                q.ring_timeout.as_secs(),
                q.wrapup.as_secs(),
                serving
            );
        }
        for sv in &t.services {
            let mut what = Vec::new();
            if !sv.guidance.is_empty() {
                what.push(format!("guidance {}", sv.guidance.join(" + ")));
            }
            if let Some(q) = &sv.queue {
                what.push(format!("queue {q}"));
            }
            if let Some(b) = &sv.bridge_to {
                what.push(format!("bridge to {b}"));
            }
            if let Some(m) = &sv.menu {
                what.push(format!("menu {m}"));
            }
            if what.is_empty() {
                what.push("answer only".to_string());
            }
            match &sv.schedule {
                Some(sch) => what.push(format!("schedule {sch}")),
                None => what.push("open 24/7".to_string()),
            }
            if sv.early_media {
                what.push("early media".to_string());
            }
            if sv.record {
                what.push("recorded".to_string());
            }
            if sv.priority > 0 {
                what.push(format!("priority {}", sv.priority));
            }
            let _ = writeln!(s, "    {} {}: {}", sv.number, sv.name, what.join(", "));
        }
    }
    s.truncate(s.trim_end().len());
    s
}

fn retention(days: u32) -> String {
    match days {
        0 => "forever".to_string(),
        n => format!("{n} days"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Loading

/// One file's text, for turning spans into lines.
struct Src {
    file: PathBuf,
    text: String,
}

impl Src {
    fn read(file: PathBuf) -> Result<Src, ConfigError> {
        match std::fs::read_to_string(&file) {
            Ok(text) => Ok(Src { file, text }),
            Err(source) => Err(ConfigError::Read { file, source }),
        }
    }

    fn line(&self, span: Range<usize>) -> usize {
        line_of(&self.text, span.start)
    }

    fn at(&self, span: Range<usize>, problem: Problem) -> ConfigError {
        ConfigError::At { file: self.file.clone(), line: self.line(span), problem: Box::new(problem) }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| self.toml_error(e))
    }

    fn toml_error(&self, e: toml::de::Error) -> ConfigError {
        let problem = toml_problem(e.message());
        match e.span() {
            Some(span) => self.at(span, problem),
            None => ConfigError::Whole { file: self.file.clone(), problem: Box::new(problem) },
        }
    }
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Types the messages serde gives for unknown and missing keys; the rest stays the parser's text.
fn toml_problem(message: &str) -> Problem {
    let quoted: Vec<String> = message.split('`').skip(1).step_by(2).map(str::to_string).collect();
    if message.starts_with("unknown field `") && !quoted.is_empty() {
        return Problem::UnknownKey { key: quoted[0].clone(), expected: quoted[1..].to_vec() };
    }
    if message.starts_with("missing field `") && !quoted.is_empty() {
        return Problem::MissingKey { key: quoted[0].clone() };
    }
    if message.starts_with("unknown variant `") && !quoted.is_empty() {
        return Problem::UnknownValue { value: quoted[0].clone(), expected: quoted[1..].to_vec() };
    }
    Problem::Syntax { message: message.trim().replace('\n', ": ") }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_text(s: &str) -> bool {
    !s.trim().is_empty() && !s.chars().any(char::is_control)
}

/// Where a service number was first defined.
struct NumberOwner {
    tenant: String,
    file: PathBuf,
    line: usize,
}

struct Loader<'d> {
    dir: &'d Path,
}

impl<'d> Loader<'d> {
    fn new(dir: &'d Path) -> Self {
        Loader { dir }
    }

    fn load(self) -> Result<Profile, ConfigError> {
        let edge = Src::read(self.dir.join("callgate.toml"))?;
        let mut profile = self.edge(&edge)?;

        let trunks_src = Src::read(self.dir.join("trunks.toml"))?;
        let trunks_file: raw::TrunksFile = trunks_src.parse()?;
        let mut trunk_lines: HashMap<String, usize> = HashMap::new();
        let mut trunks = Vec::new();
        for t in &trunks_file.trunk {
            trunks.push(self.trunk(&trunks_src, t, &mut trunk_lines)?);
        }

        let (tenants, numbers) = self.tenants(&profile.audio_dir, &profile.records)?;

        // Cross-file checks: the trunks against the tenants.
        if trunks.is_empty() {
            return Err(ConfigError::Whole { file: trunks_src.file.clone(), problem: Box::new(Problem::NoTrunks) });
        }
        for (t, raw_t) in trunks.iter().zip(&trunks_file.trunk) {
            if let Some(tenant) = &raw_t.tenant {
                if !tenants.iter().any(|x: &Tenant| x.id == *tenant.get_ref()) {
                    return Err(trunks_src.at(
                        tenant.span(),
                        Problem::UnknownTenant {
                            trunk: t.name.clone(),
                            tenant: tenant.get_ref().clone(),
                            known: tenants.iter().map(|x| x.id.clone()).collect(),
                        },
                    ));
                }
            }
            for (number, raw_n) in t.numbers.iter().zip(&raw_t.numbers) {
                let routed = match numbers.get(number) {
                    Some(owner) => t.tenant.as_deref().is_none_or(|id| id == owner.tenant),
                    None => false,
                };
                if !routed {
                    return Err(trunks_src.at(
                        raw_n.span(),
                        Problem::UnroutedNumber {
                            trunk: t.name.clone(),
                            number: number.clone(),
                            tenant: t.tenant.clone(),
                        },
                    ));
                }
            }
        }
        check_shadowing(&trunks_src, &trunks, &trunks_file)?;

        // CTI principals: their tenant and agent must exist.
        let edge_file: raw::EdgeFile = edge.parse()?;
        let mut principals = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for pt in &edge_file.principal {
            let name = pt.name.get_ref().trim().to_string();
            let bad = |span: std::ops::Range<usize>, why: String| edge.at(span, Problem::BadPrincipal { name: name.clone(), why });
            if !names.insert(name.clone()) {
                return Err(bad(pt.name.span(), "defined twice".into()));
            }
            let role = pt.role.get_ref().trim().to_ascii_lowercase();
            if !["agent", "supervisor", "integration", "admin"].contains(&role.as_str()) {
                return Err(bad(pt.role.span(), format!("role {role:?} (expected agent, supervisor, integration or admin)")));
            }
            let tenant = pt.tenant.as_ref().map(|t| t.get_ref().trim().to_string());
            if let (Some(t), Some(span)) = (&tenant, pt.tenant.as_ref().map(|t| t.span())) {
                if !tenants.iter().any(|x| &x.id == t) {
                    return Err(bad(span, format!("tenant {t:?} does not exist")));
                }
            }
            if (role == "agent" || role == "supervisor") && tenant.is_none() {
                return Err(bad(pt.role.span(), format!("a {role} needs a tenant")));
            }
            let agent = pt.agent.as_ref().map(|a| a.get_ref().trim().to_string());
            match (&agent, role.as_str()) {
                (None, "agent") => return Err(bad(pt.role.span(), "an agent principal needs `agent` (the agent id)".into())),
                (Some(a), "agent") => {
                    let t = tenants.iter().find(|x| Some(&x.id) == tenant.as_ref());
                    if !t.is_some_and(|t| t.agents.iter().any(|x| &x.id == a)) {
                        return Err(bad(pt.agent.as_ref().unwrap().span(), format!("agent {a:?} is not an agent of its tenant")));
                    }
                }
                (Some(_), _) => return Err(bad(pt.agent.as_ref().unwrap().span(), "only agent principals name an agent".into())),
                (None, _) => {}
            }
            let token_sha256 = match (&pt.token, &pt.token_sha256) {
                (Some(t), None) => {
                    if t.get_ref().len() < 8 {
                        return Err(bad(t.span(), "token shorter than 8 characters".into()));
                    }
                    use sha2::Digest;
                    sha2::Sha256::digest(t.get_ref().as_bytes()).into()
                }
                (None, Some(h)) => {
                    let v = h.get_ref().trim();
                    let bytes: Option<Vec<u8>> = (v.len() == 64)
                        .then(|| (0..32).map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).ok()).collect())
                        .flatten();
                    match bytes {
                        Some(b) => {
                            let mut out = [0u8; 32];
                            out.copy_from_slice(&b);
                            out
                        }
                        None => return Err(bad(h.span(), "token_sha256 is not 64 hex digits".into())),
                    }
                }
                _ => return Err(bad(pt.name.span(), "give exactly one of `token` and `token_sha256`".into())),
            };
            principals.push(PrincipalCfg { name, role, tenant, agent, token_sha256 });
        }

        profile.trunks = trunks;
        profile.tenants = tenants;
        profile.principals = principals;
        Ok(profile)
    }

    /// callgate.toml
    fn edge(&self, src: &Src) -> Result<Profile, ConfigError> {
        let f: raw::EdgeFile = src.parse()?;
        let mut p = Profile { dir: self.dir.to_path_buf(), ..Profile::default() };

        // [listen]
        if let Some(v) = &f.listen.sip {
            p.listen.sip = socket_addr(src, v, "listen.sip")?;
        }
        if let Some(v) = &f.listen.http {
            p.listen.http = socket_addr(src, v, "listen.http")?;
        }
        if let Some(v) = &f.listen.cti_tcp {
            p.listen.cti_tcp = Some(socket_addr(src, v, "listen.cti_tcp")?);
        }
        if let Some(list) = &f.listen.transports {
            let mut out = Vec::new();
            for v in list.get_ref() {
                let t = match v.get_ref().to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    _ => return Err(src.at(v.span(), Problem::UnknownTransport { value: v.get_ref().clone() })),
                };
                if out.contains(&t) {
                    return Err(src.at(v.span(), Problem::DuplicateTransport { value: v.get_ref().clone() }));
                }
                out.push(t);
            }
            if out.is_empty() {
                return Err(src.at(list.span(), Problem::NoTransports));
            }
            p.listen.transports = out;
        }

        // [media]
        match &f.media.address {
            Some(v) => {
                let addr: IpAddr = v.get_ref().trim().parse().map_err(|_| {
                    src.at(v.span(), Problem::BadIpAddr { key: "media.address", value: v.get_ref().clone() })
                })?;
                if addr.is_unspecified() {
                    return Err(src.at(v.span(), Problem::WildcardMediaAddress { addr }));
                }
                p.media.address = addr;
            }
            None => {
                if p.listen.sip.ip().is_unspecified() {
                    let span = f.listen.sip.as_ref().map(|v| v.span()).unwrap_or(0..0);
                    return Err(src.at(span, Problem::MediaAddressRequired { sip: p.listen.sip }));
                }
                p.media.address = p.listen.sip.ip();
            }
        }
        if let Some(v) = &f.media.rtp_ports {
            p.media.rtp_ports = parse_port_range(v.get_ref())
                .map_err(|why| src.at(v.span(), Problem::BadPortRange { value: v.get_ref().clone(), why }))?;
        }
        if p.listen.http == p.listen.sip && p.listen.transports.contains(&Transport::Tcp) {
            let span = f.listen.http.as_ref().or(f.listen.sip.as_ref()).map(|v| v.span()).unwrap_or(0..0);
            return Err(src.at(span, Problem::HttpIsSip { addr: p.listen.http }));
        }
        let (lo, hi) = p.media.rtp_ports;
        let sip = p.listen.sip;
        if (lo..=hi).contains(&sip.port())
            && (p.media.address == sip.ip() || sip.ip().is_unspecified())
            && p.listen.transports.contains(&Transport::Udp)
        {
            let span = f.media.rtp_ports.as_ref().or(f.listen.sip.as_ref()).map(|v| v.span()).unwrap_or(0..0);
            return Err(src.at(span, Problem::RtpPortsHoldSip { lo, hi, sip }));
        }
        if let Some(v) = &f.media.ptime {
            let ptime = *v.get_ref();
            if !SUPPORTED_PTIMES.contains(&ptime) {
                return Err(src.at(v.span(), Problem::BadPtime { value: ptime, supported: SUPPORTED_PTIMES }));
            }
            p.media.ptime_ms = ptime;
        }
        if let Some(v) = &f.media.inactivity {
            p.media.inactivity_s = in_range(src, v, "media.inactivity", 0, 86_400)? as u32;
        }

        // [records]
        if let Some(v) = &f.records.database {
            let pg = crate::records::Database::is_postgres(v.get_ref());
            if !is_text(v.get_ref()) {
                let value = if pg { crate::records::redact(v.get_ref()) } else { v.get_ref().clone() };
                return Err(src.at(v.span(), Problem::BadText { key: "records.database", value }));
            }
            // A PostgreSQL connection string must parse now, not when the writer starts; the message
            // leaves any password out.
            if pg {
                if let Err(e) = crate::records::Database::parse(v.get_ref()) {
                    return Err(src.at(v.span(), Problem::Syntax { message: e.to_string() }));
                }
            }
            p.records.database = PathBuf::from(v.get_ref());
        }
        if let Some(v) = &f.records.recordings_dir {
            if !is_text(v.get_ref()) {
                return Err(
                    src.at(v.span(), Problem::BadText { key: "records.recordings_dir", value: v.get_ref().clone() })
                );
            }
        }
        // Relative to the database file's directory (default "recordings": var/recordings).
        let rec = f.records.recordings_dir.as_ref().map_or("recordings", |v| v.get_ref().as_str());
        p.records.recordings_dir = p.records.resolve(Path::new(rec));
        if let Some(v) = &f.records.recording_retention_days {
            p.records.recording_retention_days =
                in_range(src, v, "records.recording_retention_days", 0, 36_500)? as u32;
        }

        // [limits]
        if let Some(v) = &f.limits.max_calls {
            p.limits.max_calls = in_range(src, v, "limits.max_calls", 1, 1_000_000)? as usize;
        }
        if let Some(v) = &f.limits.retry_after {
            p.limits.retry_after_s = in_range(src, v, "limits.retry_after", 1, 3600)? as u32;
        }
        if let Some(v) = &f.limits.max_message_bytes {
            p.limits.max_message_bytes = in_range(src, v, "limits.max_message_bytes", 1024, 1 << 20)? as usize;
        }
        if let Some(v) = &f.limits.max_cps {
            p.limits.max_cps = in_range(src, v, "limits.max_cps", 0, 1_000_000)? as u32;
        }

        // [sip]
        if let Some(v) = &f.sip.t1 {
            p.sip.t1_ms = in_range(src, v, "sip.t1", 1, 60_000)?;
        }
        if let Some(v) = &f.sip.t2 {
            p.sip.t2_ms = in_range(src, v, "sip.t2", 1, 600_000)?;
        }
        if let Some(v) = &f.sip.t4 {
            p.sip.t4_ms = in_range(src, v, "sip.t4", 1, 600_000)?;
        }
        if p.sip.t2_ms < p.sip.t1_ms {
            let span = f.sip.t2.as_ref().or(f.sip.t1.as_ref()).map(|v| v.span()).unwrap_or(0..0);
            return Err(src.at(span, Problem::T2BelowT1 { t1: p.sip.t1_ms, t2: p.sip.t2_ms }));
        }
        if let Some(v) = &f.sip.user_agent {
            if !is_text(v.get_ref()) {
                return Err(src.at(v.span(), Problem::BadText { key: "sip.user_agent", value: v.get_ref().clone() }));
            }
            p.sip.user_agent = v.get_ref().trim().to_string();
        }
        if let Some(v) = &f.sip.digest_algorithms {
            let list = v.get_ref();
            let ok = !list.is_empty()
                && list.iter().all(|a| a == "MD5" || a == "SHA-256")
                && list.iter().collect::<std::collections::BTreeSet<_>>().len() == list.len();
            if !ok {
                return Err(src.at(v.span(), Problem::BadDigestAlgorithms { value: list.join(", ") }));
            }
            p.sip.digest_algorithms = list.clone();
        }

        // audio_dir
        let audio = match &f.audio_dir {
            Some(v) => {
                if !is_text(v.get_ref()) {
                    return Err(src.at(v.span(), Problem::BadText { key: "audio_dir", value: v.get_ref().clone() }));
                }
                PathBuf::from(v.get_ref())
            }
            None => PathBuf::from("audio"),
        };
        p.audio_dir = if audio.is_absolute() { audio } else { self.dir.join(audio) };
        Ok(p)
    }

    /// One [[trunk]].
    fn trunk(&self, src: &Src, t: &raw::TrunkTable, seen: &mut HashMap<String, usize>) -> Result<Trunk, ConfigError> {
        let name = t.name.get_ref().clone();
        if !is_name(&name) {
            return Err(src.at(t.name.span(), Problem::BadName { what: "trunk name", value: name }));
        }
        let line = src.line(t.name.span());
        if let Some(&first_line) = seen.get(&name) {
            return Err(src.at(t.name.span(), Problem::DuplicateTrunk { name, first_line }));
        }
        seen.insert(name.clone(), line);

        let tenant = match &t.tenant {
            Some(v) if !is_name(v.get_ref()) => {
                return Err(src.at(v.span(), Problem::BadName { what: "tenant id", value: v.get_ref().clone() }))
            }
            Some(v) => Some(v.get_ref().clone()),
            None => None,
        };

        let mut networks = Vec::new();
        for v in t.networks.get_ref() {
            let net: IpNet = v.get_ref().parse().map_err(|why| {
                src.at(v.span(), Problem::BadNetwork { trunk: name.clone(), value: v.get_ref().clone(), why })
            })?;
            networks.push(net);
        }
        if networks.is_empty() {
            return Err(src.at(t.networks.span(), Problem::EmptyNetworks { trunk: name }));
        }

        let codecs = match &t.codecs {
            None => vec![Codec::Pcmu, Codec::Pcma],
            Some(list) => codec_list(src, &name, list)?,
        };

        let mut numbers: Vec<String> = Vec::new();
        for v in &t.numbers {
            let n = parse_number(v.get_ref()).map_err(|why| {
                src.at(
                    v.span(),
                    Problem::BadNumber { owner: format!("trunk {name:?}"), value: v.get_ref().clone(), why },
                )
            })?;
            if numbers.contains(&n) {
                return Err(src.at(v.span(), Problem::DuplicateTrunkNumber { trunk: name, number: n }));
            }
            numbers.push(n);
        }

        let outbound = match &t.outbound {
            Some(v) => {
                let u = v.get_ref().trim();
                if !u.starts_with("sip:") || crate::sip::uri::ip_socket_addr(u).is_none() {
                    return Err(src.at(v.span(), Problem::BadOutbound { trunk: name, value: v.get_ref().clone() }));
                }
                Some(u.to_owned())
            }
            None => None,
        };

        Ok(Trunk { name, tenant, networks, codecs, numbers, outbound })
    }

    /// tenants/*.toml, in file-name order. Also returns the owner of every service number.
    fn tenants(
        &self,
        audio_dir: &Path,
        records: &RecordsCfg,
    ) -> Result<(Vec<Tenant>, HashMap<String, NumberOwner>), ConfigError> {
        let tdir = self.dir.join("tenants");
        let entries = std::fs::read_dir(&tdir).map_err(|source| ConfigError::Read { file: tdir.clone(), source })?;
        let mut files = Vec::new();
        for e in entries {
            let e = e.map_err(|source| ConfigError::Read { file: tdir.clone(), source })?;
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Hidden files (editor locks, .#x.toml) and non-TOML files (README, x.toml~) are not tenants.
            if name.starts_with('.') || !name.ends_with(".toml") || !path.is_file() {
                continue;
            }
            files.push(path);
        }
        files.sort();
        if files.is_empty() {
            return Err(ConfigError::Whole { file: tdir, problem: Box::new(Problem::NoTenants) });
        }

        let mut tenants: Vec<Tenant> = Vec::new();
        let mut ids: HashMap<String, (PathBuf, usize)> = HashMap::new();
        let mut numbers: HashMap<String, NumberOwner> = HashMap::new();
        let mut users = centre::RealmUsers::default();
        for file in files {
            let src = Src::read(file)?;
            let f: raw::TenantFile = src.parse()?;
            tenants.push(self.tenant(&src, f, audio_dir, records, &mut ids, &mut numbers, &mut users)?);
        }
        Ok((tenants, numbers))
    }

    #[allow(clippy::too_many_arguments)]
    fn tenant(
        &self,
        src: &Src,
        f: raw::TenantFile,
        audio_dir: &Path,
        records: &RecordsCfg,
        ids: &mut HashMap<String, (PathBuf, usize)>,
        numbers: &mut HashMap<String, NumberOwner>,
        users: &mut centre::RealmUsers,
    ) -> Result<Tenant, ConfigError> {
        let id = f.tenant.id.get_ref().clone();
        if !is_name(&id) {
            return Err(src.at(f.tenant.id.span(), Problem::BadName { what: "tenant id", value: id }));
        }
        if let Some((file, line)) = ids.get(&id) {
            return Err(src.at(f.tenant.id.span(), Problem::DuplicateTenant { id, file: file.clone(), line: *line }));
        }
        ids.insert(id.clone(), (src.file.clone(), src.line(f.tenant.id.span())));
        let name = text(src, &f.tenant.name, "tenant.name")?;
        let realm = match &f.tenant.realm {
            Some(v) if !centre::is_realm(v.get_ref()) => {
                return Err(src.at(v.span(), Problem::BadRealm { value: v.get_ref().clone() }))
            }
            Some(v) => v.get_ref().trim().to_string(),
            None => DEFAULT_REALM.to_string(),
        };
        let utc_offset_min = match &f.tenant.utc_offset {
            Some(v) => parse_utc_offset(v.get_ref())
                .ok_or_else(|| src.at(v.span(), Problem::BadUtcOffset { value: v.get_ref().clone() }))?,
            None => DEFAULT_UTC_OFFSET_MIN,
        };
        let recordings_dir = match &f.tenant.recordings_dir {
            Some(v) if !is_text(v.get_ref()) => {
                return Err(
                    src.at(v.span(), Problem::BadText { key: "tenant.recordings_dir", value: v.get_ref().clone() })
                )
            }
            Some(v) => Some(records.resolve(Path::new(v.get_ref()))),
            None => None,
        };
        let recording_retention_days = match &f.tenant.recording_retention_days {
            Some(v) => in_range(src, v, "tenant.recording_retention_days", 0, 36_500)? as u32,
            None => records.recording_retention_days,
        };
        let centre = centre::CentreLoader { src, tenant: &id, realm: &realm, audio_dir }.load(&f, users)?;
        let known = |names: Vec<&String>| names.into_iter().cloned().collect::<Vec<String>>();

        let mut services = Vec::new();
        for s in &f.service {
            let s = s.get_ref();
            let sname = text(src, &s.name, "service.name")?;
            let number = parse_number(s.number.get_ref()).map_err(|why| {
                src.at(
                    s.number.span(),
                    Problem::BadNumber { owner: format!("service {sname:?}"), value: s.number.get_ref().clone(), why },
                )
            })?;
            let line = src.line(s.number.span());
            if let Some(first) = numbers.get(&number) {
                return Err(src.at(
                    s.number.span(),
                    Problem::DuplicateNumber {
                        number,
                        tenant: first.tenant.clone(),
                        file: first.file.clone(),
                        line: first.line,
                    },
                ));
            }
            numbers.insert(number.clone(), NumberOwner { tenant: id.clone(), file: src.file.clone(), line });

            let mut guidance = Vec::new();
            for g in &s.guidance {
                let prompt = g.get_ref();
                if prompt.to_ascii_lowercase().ends_with(".wav") {
                    return Err(src
                        .at(g.span(), Problem::PromptWithExtension { service: sname.clone(), value: prompt.clone() }));
                }
                if !is_name(prompt) {
                    return Err(src.at(g.span(), Problem::BadName { what: "prompt", value: prompt.clone() }));
                }
                let path = audio_dir.join(format!("{prompt}.wav"));
                if !path.is_file() {
                    return Err(src.at(
                        g.span(),
                        Problem::MissingPrompt { service: sname.clone(), prompt: prompt.clone(), path },
                    ));
                }
                guidance.push(prompt.clone());
            }

            let queue = match &s.queue {
                Some(q) if !is_name(q.get_ref()) => {
                    return Err(src.at(q.span(), Problem::BadName { what: "queue", value: q.get_ref().clone() }))
                }
                Some(q) if !centre.queues.iter().any(|x| x.name == *q.get_ref()) => {
                    return Err(src.at(
                        q.span(),
                        Problem::UnknownQueue {
                            owner: format!("service {sname:?}"),
                            queue: q.get_ref().clone(),
                            tenant: id.clone(),
                            known: known(centre.queues.iter().map(|x| &x.name).collect()),
                        },
                    ))
                }
                Some(q) => Some(q.get_ref().clone()),
                None => None,
            };

            let bridge_to = match &s.bridge_to {
                Some(b) => {
                    if !is_sip_uri(b.get_ref()) {
                        return Err(src.at(
                            b.span(),
                            Problem::BadBridgeTo { service: sname.clone(), value: b.get_ref().clone() },
                        ));
                    }
                    if !guidance.is_empty() {
                        return Err(src.at(b.span(), Problem::GuidanceWithBridge { service: sname.clone() }));
                    }
                    Some(b.get_ref().trim().to_string())
                }
                None => None,
            };

            let menu = match &s.menu {
                Some(m) => {
                    let Some(menu) = centre.menus.iter().find(|x| x.name == *m.get_ref()) else {
                        return Err(src.at(
                            m.span(),
                            Problem::UnknownMenu {
                                service: sname.clone(),
                                menu: m.get_ref().clone(),
                                known: known(centre.menus.iter().map(|x| &x.name).collect()),
                            },
                        ));
                    };
                    if bridge_to.is_some() {
                        return Err(src.at(m.span(), Problem::MenuWithBridge { service: sname.clone() }));
                    }
                    if queue.is_none() {
                        if let Some((key, _)) = menu.options.iter().find(|(_, o)| o.queue.is_none()) {
                            return Err(src.at(
                                m.span(),
                                Problem::MenuOptionWithoutQueue {
                                    service: sname.clone(),
                                    menu: menu.name.clone(),
                                    key: *key,
                                },
                            ));
                        }
                    }
                    Some(menu.name.clone())
                }
                None => None,
            };
            let schedule = match &s.schedule {
                Some(v) if !centre.schedules.iter().any(|x| x.name == *v.get_ref()) => {
                    return Err(src.at(
                        v.span(),
                        Problem::UnknownSchedule {
                            service: sname.clone(),
                            schedule: v.get_ref().clone(),
                            known: known(centre.schedules.iter().map(|x| &x.name).collect()),
                        },
                    ))
                }
                Some(v) => Some(v.get_ref().clone()),
                None => None,
            };
            let owner = format!("service {sname:?}");
            let closed = match &s.closed {
                Some(list) if schedule.is_none() => {
                    return Err(src.at(list.span(), Problem::ClosedWithoutSchedule { service: sname, key: "closed" }))
                }
                Some(list) => list
                    .get_ref()
                    .iter()
                    .map(|v| prompt_name(src, v, &owner, "closed", audio_dir))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            let closed_callback = match &s.closed_callback {
                Some(v) if *v.get_ref() && schedule.is_none() => {
                    return Err(
                        src.at(v.span(), Problem::ClosedWithoutSchedule { service: sname, key: "closed_callback" })
                    )
                }
                Some(v) if *v.get_ref() && queue.is_none() => {
                    return Err(src.at(v.span(), Problem::CallbackWithoutQueue { service: sname }))
                }
                Some(v) => *v.get_ref(),
                None => false,
            };
            let priority = match &s.priority {
                Some(v) => in_range(src, v, "service.priority", 0, 255)? as u8,
                None => 0,
            };

            services.push(Service {
                tenant: id.clone(),
                number,
                name: sname,
                guidance,
                queue,
                bridge_to,
                early_media: s.early_media.as_ref().is_some_and(|v| *v.get_ref()),
                menu,
                schedule,
                closed,
                closed_callback,
                record: s.record.as_ref().is_some_and(|v| *v.get_ref()),
                priority,
            });
        }
        Ok(Tenant {
            id,
            name,
            services,
            realm,
            utc_offset_min,
            queues: centre.queues,
            agents: centre.agents,
            menus: centre.menus,
            schedules: centre.schedules,
            recordings_dir,
            recording_retention_days,
        })
    }
}

fn socket_addr(src: &Src, v: &S<String>, key: &'static str) -> Result<SocketAddr, ConfigError> {
    v.get_ref().trim().parse().map_err(|_| src.at(v.span(), Problem::BadSocketAddr { key, value: v.get_ref().clone() }))
}

fn in_range(src: &Src, v: &S<u64>, key: &'static str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let value = *v.get_ref();
    if value < min || value > max {
        return Err(src.at(v.span(), Problem::OutOfRange { key, value, min, max }));
    }
    Ok(value)
}

fn text(src: &Src, v: &S<String>, key: &'static str) -> Result<String, ConfigError> {
    if !is_text(v.get_ref()) {
        return Err(src.at(v.span(), Problem::BadText { key, value: v.get_ref().clone() }));
    }
    Ok(v.get_ref().trim().to_string())
}

/// A prompt name other than a service's guidance: no `.wav`, a valid name, and `audio_dir/NAME.wav` exists.
/// `owner` (e.g. `queue "general"`) and `key` (e.g. `music`) say where it was written.
fn prompt_name(
    src: &Src,
    v: &S<String>,
    owner: &str,
    key: &'static str,
    audio_dir: &Path,
) -> Result<String, ConfigError> {
    let prompt = v.get_ref();
    if prompt.to_ascii_lowercase().ends_with(".wav") {
        return Err(
            src.at(v.span(), Problem::PromptNameWithExtension { owner: owner.to_string(), key, value: prompt.clone() })
        );
    }
    if !is_name(prompt) {
        return Err(src.at(v.span(), Problem::BadName { what: "prompt", value: prompt.clone() }));
    }
    let path = audio_dir.join(format!("{prompt}.wav"));
    if !path.is_file() {
        return Err(
            src.at(v.span(), Problem::NoPromptFile { owner: owner.to_string(), key, prompt: prompt.clone(), path })
        );
    }
    Ok(prompt.clone())
}

fn codec_list(src: &Src, trunk: &str, list: &List<String>) -> Result<Vec<Codec>, ConfigError> {
    let mut out = Vec::new();
    for v in list.get_ref() {
        let c = Codec::from_name(v.get_ref().trim()).ok_or_else(|| {
            src.at(v.span(), Problem::UnknownCodec { trunk: trunk.to_string(), value: v.get_ref().clone() })
        })?;
        if out.contains(&c) {
            return Err(src.at(v.span(), Problem::DuplicateCodec { trunk: trunk.to_string(), codec: c }));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(src.at(list.span(), Problem::NoCodecs { trunk: trunk.to_string() }));
    }
    Ok(out)
}

/// A trunk all of whose networks lie inside earlier trunks' networks can never be chosen.
fn check_shadowing(src: &Src, trunks: &[Trunk], raw: &raw::TrunksFile) -> Result<(), ConfigError> {
    for (j, t) in trunks.iter().enumerate() {
        let mut first_cover = None;
        let all_covered = t.networks.iter().all(|n| {
            let cover =
                trunks[..j].iter().find_map(|e| e.networks.iter().find(|m| m.covers(n)).map(|m| (e.name.clone(), *m)));
            if first_cover.is_none() {
                if let Some((by, m)) = &cover {
                    first_cover = Some((*n, by.clone(), *m));
                }
            }
            cover.is_some()
        });
        if all_covered {
            if let Some((network, by, covering)) = first_cover {
                return Err(src.at(
                    raw.trunk[j].name.span(),
                    Problem::ShadowedTrunk { trunk: t.name.clone(), network, by, covering },
                ));
            }
        }
    }
    Ok(())
}

/// `LO-HI`, inclusive.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), PortRangeError> {
    let (lo, hi) = s.split_once('-').ok_or(PortRangeError::Syntax)?;
    let port = |t: &str| -> Result<u16, PortRangeError> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PortRangeError::BadPort { text: t.to_string() });
        }
        match t.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(PortRangeError::BadPort { text: t.to_string() }),
        }
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(PortRangeError::Reversed { lo, hi });
    }
    let count = u32::from(hi) - u32::from(lo) + 1;
    if count < 2 {
        return Err(PortRangeError::TooSmall { count });
    }
    Ok((lo, hi))
}

/// A plausible `sip:`/`sips:` URI with a host part, no spaces or angle brackets. (The call core parses
/// it fully with `crate::sip::uri` when it uses it.)
fn is_sip_uri(s: &str) -> bool {
    let s = s.trim();
    let rest = if let Some(r) = strip_prefix_ci(s, "sips:") {
        r
    } else if let Some(r) = strip_prefix_ci(s, "sip:") {
        r
    } else {
        return false;
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    !host.is_empty()
        && !host.starts_with([':', ';', '?'])
        && !rest.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_numbers() {
        assert_eq!(normalise_number("120"), "120");
        assert_eq!(normalise_number("031-909-9000"), "0319099000");
        assert_eq!(normalise_number("(02) 120.1234"), "021201234");
        assert_eq!(normalise_number("+82 2 120"), "+822120");
        assert_eq!(normalise_number("*77#"), "*77#");
    }

    #[test]
    fn parses_numbers() {
        assert_eq!(parse_number("+82-2-120").unwrap(), "+822120");
        assert_eq!(parse_number("*120#").unwrap(), "*120#");
        assert_eq!(parse_number("12a"), Err(NumberError::BadChar { ch: 'a' }));
        assert_eq!(parse_number("1/2"), Err(NumberError::BadChar { ch: '/' }));
        assert_eq!(parse_number("12+3"), Err(NumberError::MisplacedPlus));
        assert_eq!(parse_number(""), Err(NumberError::Empty));
        assert_eq!(parse_number(" - "), Err(NumberError::Empty));
        assert_eq!(parse_number("+"), Err(NumberError::Empty));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-29999"), Ok((20000, 29999)));
        assert_eq!(parse_port_range(" 10000 - 10001 "), Ok((10000, 10001)));
        assert_eq!(parse_port_range("20000"), Err(PortRangeError::Syntax));
        assert_eq!(parse_port_range("2-1"), Err(PortRangeError::Reversed { lo: 2, hi: 1 }));
        assert_eq!(parse_port_range("0-100"), Err(PortRangeError::BadPort { text: "0".into() }));
        assert_eq!(parse_port_range("1-70000"), Err(PortRangeError::BadPort { text: "70000".into() }));
        assert_eq!(parse_port_range("1--2"), Err(PortRangeError::BadPort { text: "-2".into() }));
        assert_eq!(parse_port_range("5-5"), Err(PortRangeError::TooSmall { count: 1 }));
    }

    #[test]
    fn lines_from_offsets() {
        let t = "a\nbb\n\nc";
        assert_eq!(line_of(t, 0), 1);
        assert_eq!(line_of(t, 2), 2);
        assert_eq!(line_of(t, 5), 3);
        assert_eq!(line_of(t, 6), 4);
        assert_eq!(line_of(t, 999), 4);
    }

    #[test]
    fn types_serde_messages() {
        assert_eq!(
            toml_problem("unknown field `typo`, expected `x` or `nets`"),
            Problem::UnknownKey { key: "typo".into(), expected: vec!["x".into(), "nets".into()] }
        );
        assert_eq!(
            toml_problem("unknown field `b`, there are no fields"),
            Problem::UnknownKey { key: "b".into(), expected: vec![] }
        );
        assert_eq!(toml_problem("missing field `name`"), Problem::MissingKey { key: "name".into() });
        assert_eq!(
            toml_problem("invalid table header\nduplicate key `sub`"),
            Problem::Syntax { message: "invalid table header: duplicate key `sub`".into() }
        );
    }

    #[test]
    fn names_and_uris() {
        assert!(is_name("demo-carrier"));
        assert!(is_name("seoul_120.main"));
        assert!(!is_name(""));
        assert!(!is_name(".hidden"));
        assert!(!is_name("a/b"));
        assert!(!is_name("a b"));
        assert!(is_sip_uri("sip:agent@127.0.0.1:5070"));
        assert!(is_sip_uri("SIPS:pbx.example.org;transport=tcp"));
        assert!(!is_sip_uri("tel:+82120"));
        assert!(!is_sip_uri("sip:"));
        assert!(!is_sip_uri("sip:a b@host"));
        assert!(!is_sip_uri("<sip:x@y>"));
    }

    #[test]
    fn codec_names() {
        assert_eq!(Codec::from_name("pcmu"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_name("PCMA"), Some(Codec::Pcma));
        assert_eq!(Codec::from_name("G729"), None);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::Pcmu.to_string(), "PCMU");
    }
}
