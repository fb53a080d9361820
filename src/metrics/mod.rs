//! Latency histograms and counters, rendered as Prometheus text.
//!
//! [`Metrics`] is shared as `Arc<Metrics>` by the SIP thread, the media pacer and the HTTP server.
//! Counters are relaxed atomics. Each latency distribution ([`Stage`] and the pacer's send lateness) is an
//! HdrHistogram behind its own `Mutex` (one uncontended lock per record, tens of ns; see `latency.rs`).
//!
//! Exposition (`render_prometheus`, text format 0.0.4):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `callgate_sip_messages_total` | counter | `direction` = in / out |
//! | `callgate_sip_parse_errors_total` | counter | |
//! | `callgate_sip_rejections_total` | counter | `code`, `reason` = bad_request (400) / acl (403) / overload (503) |
//! | `callgate_rtp_packets_sent_total` | counter | |
//! | `callgate_records_suppressed_total` | counter | |
//! | `callgate_rtp_packets_received_total` | counter | |
//! | `callgate_dtmf_digits_total` | counter | |
//! | `callgate_calls_total` | counter | `outcome` (every [`Outcome`], zeros included) |
//! | `callgate_active_calls` | gauge | |
//! | `callgate_cti_connections` | gauge | |
//! | `callgate_cti_refusals_total` | counter | `reason` = rate_limited / flooding / slow_consumer / forbidden / auth_failure |
//! | `callgate_setup_latency_seconds` | histogram | `stage` |
//! | `callgate_setup_latency_quantile_seconds` | gauge | `stage`, `quantile` = 0.5 / 0.99 / 0.999 (NaN when empty) |
//! | `callgate_media_send_lateness_seconds` | histogram | |
//! | `callgate_media_send_lateness_quantile_seconds` | gauge | `quantile` |
//! | `process_*` | | from `/proc/self` |

mod latency;
pub mod process;
mod stage;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use latency::{LatencySummary, LATENESS_BUCKETS, MAX_MICROS, SETUP_BUCKETS};
pub use stage::{Mark, Stage};

use crate::records::Outcome;
use latency::Latency;

/// Event counters. Add variants freely (and a row in `COUNTER_FAMILIES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// SIP messages received (datagrams / framed stream messages).
    SipIn,
    /// SIP messages sent (including retransmissions).
    SipOut,
    /// Inputs that did not parse as SIP.
    ParseErrors,
    /// `400 Bad Request` sent.
    BadRequest400,
    /// `403 Forbidden` sent: source not allowed by the trunk ACL.
    Forbidden403,
    /// `503 Service Unavailable` sent because of load (max calls).
    Overload503,
    /// RTP packets sent by the media pacer.
    RtpSent,
    /// Records of statelessly refused INVITEs not written because a flood exceeded the record budget.
    RecordsSuppressed,
    /// RTP packets received from callers.
    RtpReceived,
    /// DTMF digits received from callers.
    DtmfDigits,
    /// CTI messages answered `rate_limited`.
    CtiRateLimited,
    /// CTI connections closed for flooding.
    CtiFloods,
    /// CTI clients disconnected as slow consumers.
    CtiSlowConsumers,
    /// CTI commands refused as `forbidden`.
    CtiForbidden,
    /// CTI authentication failures.
    CtiAuthFailures,
}

impl Counter {
    pub const ALL: [Counter; 15] = [
        Counter::SipIn,
        Counter::SipOut,
        Counter::ParseErrors,
        Counter::BadRequest400,
        Counter::Forbidden403,
        Counter::Overload503,
        Counter::RtpSent,
        Counter::RecordsSuppressed,
        Counter::RtpReceived,
        Counter::DtmfDigits,
        Counter::CtiRateLimited,
        Counter::CtiFloods,
        Counter::CtiSlowConsumers,
        Counter::CtiForbidden,
        Counter::CtiAuthFailures,
    ];
}

/// A counter family: metric name, help text, and each member counter with its label set.
type CounterFamily = (&'static str, &'static str, &'static [(Counter, &'static str)]);

/// Every counter, grouped into families (a test checks that none is missing).
const COUNTER_FAMILIES: &[CounterFamily] = &[
    (
        "callgate_sip_messages_total",
        "SIP messages received and sent.",
        &[(Counter::SipIn, "direction=\"in\""), (Counter::SipOut, "direction=\"out\"")],
    ),
    ("callgate_sip_parse_errors_total", "Received SIP input that did not parse.", &[(Counter::ParseErrors, "")]),
    (
        "callgate_sip_rejections_total",
        "Requests refused with an error response, by code.",
        &[
            (Counter::BadRequest400, "code=\"400\",reason=\"bad_request\""),
            (Counter::Forbidden403, "code=\"403\",reason=\"acl\""),
            (Counter::Overload503, "code=\"503\",reason=\"overload\""),
        ],
    ),
    ("callgate_rtp_packets_sent_total", "RTP packets sent.", &[(Counter::RtpSent, "")]),
    ("callgate_rtp_packets_received_total", "RTP packets received from callers.", &[(Counter::RtpReceived, "")]),
    ("callgate_dtmf_digits_total", "DTMF digits received from callers (RFC 4733 or SIP INFO).", &[(Counter::DtmfDigits, "")]),
    (
        "callgate_cti_refusals_total",
        "CTI messages and connections refused, by reason.",
        &[
            (Counter::CtiRateLimited, "reason=\"rate_limited\""),
            (Counter::CtiFloods, "reason=\"flooding\""),
            (Counter::CtiSlowConsumers, "reason=\"slow_consumer\""),
            (Counter::CtiForbidden, "reason=\"forbidden\""),
            (Counter::CtiAuthFailures, "reason=\"auth_failure\""),
        ],
    ),
    (
        "callgate_records_suppressed_total",
        "Records of statelessly refused INVITEs (403 to strangers, 400, 415 ...) not written: over the budget of 50 a second.",
        &[(Counter::RecordsSuppressed, "")],
    ),
];

/// The quantiles exported as gauges.
pub const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.99, "0.99"), (0.999, "0.999")];

/// All metrics of one callgate process. `Send + Sync`; share it as `Arc<Metrics>`.
pub struct Metrics {
    counters: [AtomicU64; Counter::ALL.len()],
    outcomes: [AtomicU64; Outcome::ALL.len()],
    active_calls: AtomicU64,
    cti_connections: AtomicU64,
    stages: Vec<Latency>, // indexed like Stage::ALL
    lateness: Latency,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn stage_index(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).expect("Stage::ALL lists every stage")
}

fn counter_index(c: Counter) -> usize {
    c as usize
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            active_calls: AtomicU64::new(0),
            cti_connections: AtomicU64::new(0),
            stages: Stage::ALL.iter().map(|_| Latency::new(SETUP_BUCKETS)).collect(),
            lateness: Latency::new(LATENESS_BUCKETS),
        }
    }

    /// Records one latency sample for a call-setup stage.
    #[inline]
    pub fn record(&self, stage: Stage, d: Duration) {
        self.stages[stage_index(stage)].record(d);
    }

    /// Records `now - mark.since` in the mark's stage (saturating at zero).
    #[inline]
    pub fn record_mark(&self, mark: Mark, now: std::time::Instant) {
        self.record(mark.stage, now.saturating_duration_since(mark.since));
    }

    /// Records how late the media pacer sent a packet relative to its slot.
    #[inline]
    pub fn record_lateness(&self, d: Duration) {
        self.lateness.record(d);
    }

    /// Counts one finished call by outcome.
    #[inline]
    pub fn outcome(&self, o: Outcome) {
        self.outcomes[o.index()].fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.counters[counter_index(c)].fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a counter to a total kept elsewhere (e.g. the CTI hub's own counts, copied each second).
    #[inline]
    pub fn set_total(&self, c: Counter, n: u64) {
        self.counters[counter_index(c)].store(n, Ordering::Relaxed);
    }

    /// CTI connections open now.
    #[inline]
    pub fn set_cti_connections(&self, n: usize) {
        self.cti_connections.store(n as u64, Ordering::Relaxed);
    }

    #[inline]
    pub fn set_active_calls(&self, n: usize) {
        self.active_calls.store(n as u64, Ordering::Relaxed);
    }

    // ---- reading (tests, wallboard, summary) ----------------------------------------------------

    pub fn counter(&self, c: Counter) -> u64 {
        self.counters[counter_index(c)].load(Ordering::Relaxed)
    }

    pub fn outcome_count(&self, o: Outcome) -> u64 {
        self.outcomes[o.index()].load(Ordering::Relaxed)
    }

    pub fn active_calls(&self) -> u64 {
        self.active_calls.load(Ordering::Relaxed)
    }

    /// Count and p50/p90/p99/p99.9/max in µs of a stage; `None` if nothing was recorded.
    pub fn stage_summary(&self, stage: Stage) -> Option<LatencySummary> {
        self.stages[stage_index(stage)].snapshot().summary()
    }

    pub fn lateness_summary(&self) -> Option<LatencySummary> {
        self.lateness.snapshot().summary()
    }

    // ---- rendering ------------------------------------------------------------------------------

    /// Prometheus text exposition format 0.0.4, including the `process_*` families.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        for (name, help, members) in COUNTER_FAMILIES {
            header(&mut out, name, "counter", help);
            for (c, labels) in *members {
                sample(&mut out, name, labels, self.counter(*c));
            }
        }

        header(&mut out, "callgate_calls_total", "counter", "Finished calls by outcome.");
        for o in Outcome::ALL {
            sample(&mut out, "callgate_calls_total", &format!("outcome=\"{}\"", o.as_str()), self.outcome_count(o));
        }

        header(&mut out, "callgate_active_calls", "gauge", "Calls in progress.");
        sample(&mut out, "callgate_active_calls", "", self.active_calls());
        header(&mut out, "callgate_cti_connections", "gauge", "CTI connections open (WebSocket, Unix socket, TCP).");
        sample(&mut out, "callgate_cti_connections", "", self.cti_connections.load(Ordering::Relaxed));

        let stages: Vec<(String, latency::Inner)> = Stage::ALL
            .iter()
            .zip(&self.stages)
            .map(|(s, l)| (format!("stage=\"{}\"", s.label()), l.snapshot()))
            .collect();
        let lateness = [(String::new(), self.lateness.snapshot())];

        histogram(
            &mut out,
            "callgate_setup_latency_seconds",
            "Call-setup latency per stage, measured from receipt to the write of the answer.",
            SETUP_BUCKETS,
            &stages,
        );
        quantile_gauges(
            &mut out,
            "callgate_setup_latency_quantile_seconds",
            "Call-setup latency quantiles per stage since start (HdrHistogram, 3 significant digits).",
            &stages,
        );
        histogram(
            &mut out,
            "callgate_media_send_lateness_seconds",
            "How late the media pacer sent RTP packets relative to their slot.",
            LATENESS_BUCKETS,
            &lateness,
        );
        quantile_gauges(
            &mut out,
            "callgate_media_send_lateness_quantile_seconds",
            "Media send lateness quantiles since start (HdrHistogram, 3 significant digits).",
            &lateness,
        );

        process::render(&mut out);
        out
    }

    /// A human-readable table of every latency distribution (printed at shutdown), in µs.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "stage (µs)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let rows = Stage::ALL
            .iter()
            .map(|s| (s.label(), self.stage_summary(*s)))
            .chain(std::iter::once(("media_send_lateness", self.lateness_summary())));
        for (label, s) in rows {
            match s {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                        label, s.count, s.p50, s.p90, s.p99, s.p999, s.max
                    );
                }
                None => {
                    let _ = writeln!(out, "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}", label, 0, "-", "-", "-", "-", "-");
                }
            }
        }
        let mut counts = String::new();
        for o in Outcome::ALL {
            let n = self.outcome_count(o);
            if n > 0 {
                let _ = write!(counts, " {}={}", o.as_str(), n);
            }
        }
        let _ = writeln!(out, "calls:{}", if counts.is_empty() { " none" } else { &counts });
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// `labels` plus one more pair, comma-joined.
fn join(labels: &str, extra: &str) -> String {
    if labels.is_empty() {
        extra.to_owned()
    } else {
        format!("{labels},{extra}")
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[(u64, &str)],
    series: &[(String, latency::Inner)],
) {
    header(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for (labels, h) in series {
        let mut cum = 0u64;
        for (i, (_, le)) in bounds.iter().enumerate() {
            cum += h.buckets[i];
            sample(out, &bucket, &join(labels, &format!("le=\"{le}\"")), cum);
        }
        cum += h.buckets[bounds.len()];
        debug_assert_eq!(cum, h.count);
        sample(out, &bucket, &join(labels, "le=\"+Inf\""), h.count);
        sample(out, &format!("{name}_sum"), labels, h.sum_ns as f64 / 1e9);
        sample(out, &format!("{name}_count"), labels, h.count);
    }
}

fn quantile_gauges(out: &mut String, name: &str, help: &str, series: &[(String, latency::Inner)]) {
    header(out, name, "gauge", help);
    for (labels, h) in series {
        for (q, qs) in QUANTILES {
            let labels = join(labels, &format!("quantile=\"{qs}\""));
            if h.count == 0 {
                sample(out, name, &labels, "NaN");
            } else {
                sample(out, name, &labels, h.hist.value_at_quantile(q) as f64 / 1e6);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
