//! Interval reports: rows per interval and scope, rendered as JSON and CSV.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Figures, SLOTS_PER_DAY};

/// Report interval length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum IntervalLen {
    M15,
    M30,
    M60,
}

impl IntervalLen {
    pub fn minutes(self) -> u32 {
        match self {
            IntervalLen::M15 => 15,
            IntervalLen::M30 => 30,
            IntervalLen::M60 => 60,
        }
    }

    /// In 15-minute slots.
    pub fn slots(self) -> i64 {
        self.minutes() as i64 / 15
    }

    /// 15, 30 or 60.
    pub fn from_minutes(m: u32) -> Option<IntervalLen> {
        match m {
            15 => Some(IntervalLen::M15),
            30 => Some(IntervalLen::M30),
            60 => Some(IntervalLen::M60),
            _ => None,
        }
    }

    /// Intervals in a day.
    pub fn per_day(self) -> usize {
        (SLOTS_PER_DAY / self.slots()) as usize
    }
}

/// One interval of one scope.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntervalRow {
    /// "tenant", "queue" or "agent".
    pub scope: &'static str,
    /// The queue name, the agent id, or the tenant's name.
    pub name: String,
    /// Local start, `YYYY-MM-DDTHH:MM+09:00`.
    pub start: String,
    pub start_ms: i64,
    pub minutes: u32,
    #[serde(flatten)]
    pub figures: Figures,
    /// Offered load: offered calls / interval length × AHT (the interval's AHT, else the day's).
    /// None for agents.
    pub traffic_erlangs: Option<f64>,
    /// Erlang C: the fewest agents reaching the target service level at the queue's threshold for that
    /// load; compare with `agents_staffed`. None for agents.
    pub agents_needed: Option<u32>,
}

/// An interval report of one tenant's day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub tenant: String,
    /// Local date `YYYY-MM-DD`.
    pub day: String,
    pub utc_offset_min: i32,
    pub interval_minutes: u32,
    /// The service-level formula (`SlFormula::name`).
    pub sl_formula: &'static str,
    /// The default SL threshold (queues may have their own).
    pub sl_threshold_s: f64,
    /// Staffing advice target.
    pub target_sl: f64,
    pub fcr_window_days: u32,
    pub rows: Vec<IntervalRow>,
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "scope",
    "name",
    "start",
    "minutes",
    "offered",
    "answered",
    "answered_in_sl",
    "service_level",
    "ks_service_level_20s",
    "abandoned",
    "short_abandoned",
    "ks_abandonment",
    "answer_rate",
    "asa_s",
    "aht_s",
    "talk_s",
    "hold_s",
    "wrap_s",
    "transfers",
    "callbacks_requested",
    "ks_fcr",
    "fcr_calls",
    "fcr_resolved",
    "occupancy",
    "agents_staffed",
    "traffic_erlangs",
    "agents_needed",
    "subjects",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

/// RFC 4180 quoting when needed.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

impl Report {
    /// The report as a JSON object (rates as fractions, times in seconds, missing values null).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The report as CSV (RFC 4180, header line [`CSV_COLUMNS`], CRLF line ends; rates as fractions with
    /// 4 decimals, times in seconds, empty where undefined; subjects as `subject:count` joined by `;`).
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 + self.rows.len() * 160);
        out.push_str(&CSV_COLUMNS.join(","));
        out.push_str("\r\n");
        for r in &self.rows {
            let f = &r.figures;
            let subjects: Vec<String> = f.subjects.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let cells = [
                r.scope.to_owned(),
                field(&r.name),
                r.start.clone(),
                r.minutes.to_string(),
                f.offered.to_string(),
                f.answered.to_string(),
                f.answered_in_sl.to_string(),
                opt(f.service_level),
                opt(f.ks_service_level_20s),
                f.abandoned.to_string(),
                f.short_abandoned.to_string(),
                opt(f.ks_abandonment),
                opt(f.answer_rate),
                opt(f.asa_s),
                opt(f.aht_s),
                format!("{:.3}", f.talk_s),
                format!("{:.3}", f.hold_s),
                format!("{:.3}", f.wrap_s),
                f.transfers.to_string(),
                f.callbacks_requested.to_string(),
                opt(f.ks_fcr),
                f.fcr_calls.to_string(),
                f.fcr_resolved.to_string(),
                opt(f.occupancy),
                format!("{:.4}", f.agents_staffed),
                opt(r.traffic_erlangs),
                r.agents_needed.map(|n| n.to_string()).unwrap_or_default(),
                field(&subjects.join(";")),
            ];
            let _ = write!(out, "{}", cells.join(","));
            out.push_str("\r\n");
        }
        out
    }
}
