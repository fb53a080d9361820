//! Errors of profile loading: which file, which line, and a typed problem.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::ipnet::{IpNet, IpNetError};
use super::schedule::{DateError, TimeRangeError};
use super::Codec;

/// A profile that cannot be used. `Display` gives `FILE:LINE: problem` (or `FILE: problem` where no
/// single line is at fault), which is what `callgate` prints before refusing to start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory of the profile could not be read (missing, permissions, not UTF-8...).
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem at one line of one file. (Boxed: the error stays small on the `Ok` path.)
    #[error("{}:{line}: {problem}", file.display())]
    At { file: PathBuf, line: usize, problem: Box<Problem> },
    /// A problem with a file (or the tenants directory) as a whole.
    #[error("{}: {problem}", file.display())]
    Whole { file: PathBuf, problem: Box<Problem> },
}

impl ConfigError {
    /// The file (or directory) at fault.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Read { file, .. } | ConfigError::At { file, .. } | ConfigError::Whole { file, .. } => file,
        }
    }

    /// The 1-based line at fault, if a single line is.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::At { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The typed problem (None for read errors).
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::At { problem, .. } | ConfigError::Whole { problem, .. } => Some(problem.as_ref()),
            ConfigError::Read { .. } => None,
        }
    }
}

/// What is wrong. Each variant says what was expected and what was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// TOML syntax, or a value of the wrong type, as the TOML parser reports it.
    #[error("{message}")]
    Syntax { message: String },
    /// A key this version does not know (typos are caught here).
    #[error("unknown key `{key}`{}", expected_list(.expected))]
    UnknownKey { key: String, expected: Vec<String> },
    /// A required key is absent.
    #[error("missing key `{key}`")]
    MissingKey { key: String },
    #[error("{key}: {value:?} is not a socket address (expected IP:PORT, e.g. 127.0.0.1:5060 or [::1]:5060)")]
    BadSocketAddr { key: &'static str, value: String },
    #[error("{key}: {value:?} is not an IP address")]
    BadIpAddr { key: &'static str, value: String },
    #[error(
        "media.address {addr} is a wildcard address: it is sent to callers in SDP, so it must be one they can reach"
    )]
    WildcardMediaAddress { addr: IpAddr },
    #[error("media.address is required when listen.sip is a wildcard address ({sip}): it is sent to callers in SDP")]
    MediaAddressRequired { sip: SocketAddr },
    #[error("listen.http {addr} is also listen.sip, which SIP over TCP binds")]
    HttpIsSip { addr: SocketAddr },
    #[error("media.rtp_ports {lo}-{hi} include the port of listen.sip ({sip}) on the same address")]
    RtpPortsHoldSip { lo: u16, hi: u16, sip: SocketAddr },
    #[error("listen.transports: unknown transport {value:?} (expected \"udp\" or \"tcp\")")]
    UnknownTransport { value: String },
    #[error("listen.transports: {value:?} is listed twice")]
    DuplicateTransport { value: String },
    #[error("listen.transports is empty: the edge would accept no SIP at all")]
    NoTransports,
    #[error("media.rtp_ports: {value:?} is not a port range: {why}")]
    BadPortRange { value: String, why: PortRangeError },
    #[error("media.ptime: {value} ms is not supported (supported: {})", list_u32(.supported))]
    BadPtime { value: u32, supported: &'static [u32] },
    /// A number outside what the edge accepts (timers, limits).
    #[error("{key}: {value} is out of range (expected {min} to {max})")]
    OutOfRange { key: &'static str, value: u64, min: u64, max: u64 },
    #[error(
        "sip.t2 ({t2} ms) is shorter than sip.t1 ({t1} ms); RFC 3261 caps retransmit intervals at T2, so T2 >= T1"
    )]
    T2BelowT1 { t1: u64, t2: u64 },
    #[error("{key}: {value:?} must be non-empty text without control characters")]
    BadText { key: &'static str, value: String },
    #[error("principal {name:?}: {why}")]
    BadPrincipal { name: String, why: String },
    #[error("sip.digest_algorithms: {value:?} (expected a non-empty list of \"MD5\" and \"SHA-256\", each at most once)")]
    BadDigestAlgorithms { value: String },
    #[error("{what} {value:?} is not a valid name (expected 1 to 64 of A-Z a-z 0-9 _ - ., not starting with .)")]
    BadName { what: &'static str, value: String },
    #[error("no [[trunk]] is defined: every call would be refused")]
    NoTrunks,
    #[error("trunk {name:?} is defined twice (first at line {first_line})")]
    DuplicateTrunk { name: String, first_line: usize },
    #[error("trunk {trunk:?}: networks is empty: no caller could reach this trunk")]
    EmptyNetworks { trunk: String },
    #[error("trunk {trunk:?}: network {value:?} is not an IP prefix: {why}")]
    BadNetwork { trunk: String, value: String, why: IpNetError },
    #[error("trunk {trunk:?} would never be used: its networks all fall inside earlier trunks' (e.g. {network} inside trunk {by:?}'s {covering}); the first trunk whose networks match a caller wins")]
    ShadowedTrunk { trunk: String, network: IpNet, by: String, covering: IpNet },
    #[error("trunk {trunk:?}: unknown codec {value:?} (expected \"PCMU\" or \"PCMA\")")]
    UnknownCodec { trunk: String, value: String },
    #[error("trunk {trunk:?}: codec {} is listed twice", codec.name())]
    DuplicateCodec { trunk: String, codec: Codec },
    #[error("trunk {trunk:?}: codecs is empty: no call could be answered")]
    NoCodecs { trunk: String },
    #[error("trunk {trunk:?}: tenant {tenant:?} does not exist (tenants: {})", name_list(.known))]
    UnknownTenant { trunk: String, tenant: String, known: Vec<String> },
    #[error("trunk {trunk:?}: number {number:?} is listed twice")]
    DuplicateTrunkNumber { trunk: String, number: String },
    #[error("trunk {trunk:?}: number {number:?} is not the number of any service{}", tenant_suffix(.tenant))]
    UnroutedNumber { trunk: String, number: String, tenant: Option<String> },
    /// `owner` says whose number it is, e.g. `trunk "kt"` or `service "Water supply"`.
    #[error("{owner}: {value:?} is not a phone number: {why}")]
    BadNumber { owner: String, value: String, why: NumberError },
    #[error("service number {number:?} is already used by tenant {tenant:?} ({}:{line}): a called number must lead to exactly one service", file.display())]
    DuplicateNumber { number: String, tenant: String, file: PathBuf, line: usize },
    #[error("tenant id {id:?} is already used by {}:{line}", file.display())]
    DuplicateTenant { id: String, file: PathBuf, line: usize },
    #[error("service {service:?}: guidance prompt {prompt:?} has no file {}", path.display())]
    MissingPrompt { service: String, prompt: String, path: PathBuf },
    #[error(
        "service {service:?}: prompt {value:?}: give the name without \".wav\" (the file is NAME.wav in audio_dir)"
    )]
    PromptWithExtension { service: String, value: String },
    #[error("trunk {trunk:?}: outbound {value:?} is not a sip: URI with an IP address and port (e.g. \"sip:203.0.113.5:5060\")")]
    BadOutbound { trunk: String, value: String },
    #[error("service {service:?}: bridge_to {value:?} is not a sip: or sips: URI")]
    BadBridgeTo { service: String, value: String },
    #[error("service {service:?}: guidance is not played when bridge_to is set (the call is bridged straight away); remove one of them")]
    GuidanceWithBridge { service: String },
    #[error("no tenant files (*.toml): every call would be refused")]
    NoTenants,

    // --- ACD, menus, schedules, recording (tenant files) and their edge-wide settings ---
    /// A value outside a fixed set (strategy, on_max_wait...), as serde reports it.
    #[error("unknown value {value:?}{}", expected_list(.expected))]
    UnknownValue { value: String, expected: Vec<String> },
    #[error("tenant.realm {value:?} must be non-empty text without control characters, '\"' or '\\' (it is sent in WWW-Authenticate realm=\"...\")")]
    BadRealm { value: String },
    #[error("tenant.utc_offset {value:?} is not a UTC offset (expected \"+HH:MM\" or \"-HH:MM\" from -12:00 to +14:00, e.g. \"+09:00\" for Korea)")]
    BadUtcOffset { value: String },
    /// Two queues, menus or schedules of one tenant with the same name.
    #[error("{what} {name:?} is defined twice in this tenant (first at line {first_line})")]
    DuplicateName { what: &'static str, name: String, first_line: usize },
    /// `owner` e.g. `service "Dasan"`, `agent "kim"`, `menu "language" key '1'`, `queue "a" overflow`.
    #[error("{owner}: queue {queue:?} is not a [[queue]] of tenant {tenant:?} (queues: {})", name_list(.known))]
    UnknownQueue { owner: String, queue: String, tenant: String, known: Vec<String> },
    #[error("service {service:?}: menu {menu:?} is not a [[menu]] of this tenant (menus: {})", name_list(.known))]
    UnknownMenu { service: String, menu: String, known: Vec<String> },
    #[error("service {service:?}: schedule {schedule:?} is not a [[schedule]] of this tenant (schedules: {})", name_list(.known))]
    UnknownSchedule { service: String, schedule: String, known: Vec<String> },
    #[error("{owner}: no agent of tenant {tenant:?} has skill {skill:?}, so no agent could ever take these calls (skills of its agents: {})", name_list(.known))]
    UnknownSkill { owner: String, skill: String, tenant: String, known: Vec<String> },
    #[error("{owner}: level {value} of skill {skill:?} is out of range (expected {min} to {max})")]
    LevelOutOfRange { owner: String, skill: String, value: u64, min: u8, max: u8 },
    #[error("queue {queue:?}, skill {skill:?}: relax level {relax} must be lower than the level before it ({level}): relaxing accepts lower levels as the wait grows")]
    RelaxNotLower { queue: String, skill: String, level: u8, relax: u8 },
    #[error("queue {queue:?}, skill {skill:?}: relax after = {after} s must be later than the step before it ({previous} s)")]
    RelaxNotLater { queue: String, skill: String, after: u64, previous: u64 },
    #[error("queue {queue:?}: on_max_wait has no effect without max_wait (seconds a caller may wait)")]
    OnMaxWaitWithoutMaxWait { queue: String },
    #[error("queue {queue:?}: on_max_wait = \"{on_max_wait}\" needs {key}")]
    OnMaxWaitNeeds { queue: String, on_max_wait: &'static str, key: &'static str },
    #[error("queue {queue:?}: {key} is only used with on_max_wait = \"{needs}\" (on_max_wait is \"{on_max_wait}\")")]
    OnMaxWaitUnused { queue: String, key: &'static str, needs: &'static str, on_max_wait: &'static str },
    #[error("queue {queue:?}: overflow goes round in a loop ({}): a caller would move between these queues forever", .path.join(" -> "))]
    OverflowLoop { queue: String, path: Vec<String> },
    #[error("{owner}: {value:?} is not a DTMF key (expected one character of 0-9, *, #, A-D)")]
    BadDtmfKey { owner: String, value: String },
    #[error("menu {menu:?}: key '{key}' is given twice (first at line {first_line}): a key must lead to one choice")]
    DuplicateMenuKey { menu: String, key: char, first_line: usize },
    #[error("menu {menu:?}: default '{key}' is not one of its keys ({keys})")]
    MenuDefaultNotAnOption { menu: String, key: char, keys: String },
    #[error("menu {menu:?} has no [[menu.option]]: expected at least one key, e.g. key = \"1\", label = \"ko\"")]
    NoMenuOptions { menu: String },
    #[error("service {service:?}: menu {menu:?} key '{key}' names no queue and the service has no queue: the caller would have nowhere to wait")]
    MenuOptionWithoutQueue { service: String, menu: String, key: char },
    #[error("service {service:?}: a menu is not played when bridge_to is set (the call is bridged straight away); remove one of them")]
    MenuWithBridge { service: String },
    /// A prompt other than a service's guidance with no file.
    #[error("{owner}: {key} prompt {prompt:?} has no file {}", path.display())]
    NoPromptFile { owner: String, key: &'static str, prompt: String, path: PathBuf },
    #[error("{owner}: {key} prompt {value:?}: give the name without \".wav\" (the file is NAME.wav in audio_dir)")]
    PromptNameWithExtension { owner: String, key: &'static str, value: String },
    #[error("schedule {schedule:?}, {key}: {value:?} is not an opening-hours range: {why}")]
    BadTimeRange { schedule: String, key: String, value: String, why: TimeRangeError },
    #[error("schedule {schedule:?}, {key}: {value:?} is not a date: {why}")]
    BadDate { schedule: String, key: &'static str, value: String, why: DateError },
    #[error("schedule {schedule:?}: {key} {date} is given twice (first at line {first_line})")]
    DuplicateDate { schedule: String, key: &'static str, date: String, first_line: usize },
    #[error("agent id {id:?} is already used in realm {realm:?} by tenant {tenant:?} ({}:{line})", file.display())]
    DuplicateAgent { id: String, realm: String, tenant: String, file: PathBuf, line: usize },
    #[error("extension {extension:?} is already used in realm {realm:?} by tenant {tenant:?} ({}:{line}): a REGISTER must identify exactly one agent; give the tenants different realms or the agents different extensions", file.display())]
    DuplicateExtension { extension: String, realm: String, tenant: String, file: PathBuf, line: usize },
    #[error("agent {agent:?}: no credentials (expected password = \"...\", or both ha1_md5 and ha1_sha256 as printed by `callgate hash-password`)")]
    NoCredentials { agent: String },
    #[error("agent {agent:?}: give either password or ha1_md5 + ha1_sha256, not both")]
    PasswordAndHash { agent: String },
    #[error("agent {agent:?}: {missing} is missing (ha1_md5 and ha1_sha256 go together: softphones may use either algorithm)")]
    IncompleteHa1 { agent: String, missing: &'static str },
    #[error("agent {agent:?}: {key} is not {digits} hex digits")]
    BadHa1 { agent: String, key: &'static str, digits: usize },
    /// The value is not repeated in the message: it is a password.
    #[error("agent {agent:?}: the password must be non-empty and without control characters")]
    BadPassword { agent: String },
    #[error("agent_range {from}-{to}: {why}")]
    BadAgentRange { from: u64, to: u64, why: &'static str },
    #[error("agent {agent:?} serves no queue (expected queues = {{ NAME = PENALTY, ... }}, e.g. queues = {{ general = 0 }})")]
    AgentWithoutQueues { agent: String },
    #[error("service {service:?}: {key} has no effect without a schedule (the service is open 24/7)")]
    ClosedWithoutSchedule { service: String, key: &'static str },
    #[error("service {service:?}: closed_callback needs a queue (the callback waits in the service's queue)")]
    CallbackWithoutQueue { service: String },
}

/// Why a text is not an `LO-HI` port range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("expected LO-HI, e.g. \"20000-29999\"")]
    Syntax,
    #[error("{text:?} is not a port number (1 to 65535)")]
    BadPort { text: String },
    #[error("the range is reversed ({lo} > {hi})")]
    Reversed { lo: u16, hi: u16 },
    #[error("it holds {count} port(s): RTP needs an even/odd pair per call, so at least 2")]
    TooSmall { count: u32 },
}

/// Why a text is not a phone number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("it is empty")]
    Empty,
    #[error("{ch:?} is not allowed (expected digits, + * #, and the visual separators - . ( ) and space)")]
    BadChar { ch: char },
    #[error("'+' may only lead the number")]
    MisplacedPlus,
}

fn expected_list(v: &[String]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!(" (expected one of: {})", v.join(", "))
    }
}

fn name_list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
    }
}

fn list_u32(v: &[u32]) -> String {
    v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

fn tenant_suffix(t: &Option<String>) -> String {
    match t {
        Some(t) => format!(" of tenant {t:?}"),
        None => String::new(),
    }
}
