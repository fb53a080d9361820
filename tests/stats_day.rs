//! A scripted day of queue events in virtual time; every figure is computed by hand below.
//!
//! Tenant "demo" (KST, +540 min), day 2024-05-01. Queues: `general` (G, agents 1001 and 1002) and `en`
//! (E, agent 1003). Thresholds: SL 20 s (inclusive), short abandon 5 s (a wait below it). Every answered
//! call: the agent's phone rings 3 s before the answer (reserved), talk, hold, then wrap-up; the
//! disposition comes 2 s after the end of the conversation. Every queued call also has a call record
//! arriving 13 s before it entered the queue (the guidance announcement), so its contact time for
//! first-call resolution is enter − 13 s.
//!
//! ```text
//! call enter(KST) queue  caller        outcome                                  talk hold wrap  disposition
//! c01  09:00:00   G      01011110001   1001 answers after 5 s                    180   0   30  traffic   settled
//! c02  09:01:00   G      01011110002   1002 after 12 s                           240  20   40  passports settled
//! c03  09:02:00   G      01011110003   abandons after 3 s (short)
//! c04  09:03:00   G      01011110004   1001 after 35 s                           120   0   15  tax       not settled
//! c05  09:04:00   G      01011110005   abandons after 40 s
//! c06  09:05:00   G      01011110001   1001 after 55 s (repeat of c01)            60   0   10  traffic   settled
//! c07  09:10:00   G      01011110007   1002 after 8 s, TRANSFER to dept          300   -   30  welfare   not settled
//! c08  09:12:00   G      anonymous     1001 after 20 s (= T: in SL)               90   0   15  events    settled
//! c09  09:14:50   G      01011110009   1001 after 10 s (answered 09:15:00)       200   0   20  water     settled
//! c10  09:20:00   G      01011110010   asks for a callback after 30 s; called back 11:00 by 1001:
//!                                      callback_connect, talk 100, wrap 10, tax settled
//! c11  09:21:00   G→E    01011110011   overflows to E after 100 s; 1003 answers, wait 130 s
//!                                                                                150   0   20  passports settled
//! c12  09:25:00   G      01011110012   abandons after 4.999 s (short)
//! c13  09:26:00   G      01011110013   abandons after 5.000 s (not short; within SL)
//! c14  09:31:00   G      01011110002   1001 after 15 s (repeat of c02)           200  30   25  passports settled
//! c15  09:35:00   E      01011110015   1003 after 6 s                            100   0   10  events    settled
//! c16  09:40:00   G      01011110016   refused at the door (full)
//! c17  09:45:00   G      01011110017   1001 after 19 s                            60   0   10  environment settled,
//!                                      then changed by the agent to: water, not settled
//! c18  09:50:00   G      01011110018   abandons after 18 s while 1001's phone rang (offered 09:50:10)
//! c19  09:55:00   G      01011110019   1002 after 9 s                            120   0   30  traffic   settled
//! c20  09:58:00   E      01011110020   1003 after 25 s                            90   0   10  tax       settled
//! more call records (no queue): r21 10:30:00 caller ...015, abandoned in the announcement (a repeat of c15);
//!   r22 from ...009 exactly 7 days after c09's arrival (inside the window: c09 is not resolved);
//!   r23 from ...019 7 days + 1 s after c19's arrival (outside: c19 stays resolved).
//! Agents: 1001 and 1002 log in (ready) 08:55, 1003 at 09:00; 1002 is not ready ("break") 09:16–09:40.
//! ```

use callgate::acd::log::{QueueEvent, QueueEventKind as K};
use callgate::records::{CallRecord, Outcome};
use callgate::stats::erlang;
use callgate::stats::{Date, IntervalLen, Scope, SlFormula, Stats, StatsConfig, DAY_MS};

const TENANT: &str = "demo";
/// 2024-05-01T00:00+09:00.
const MIDNIGHT: i64 = 1_714_489_200_000;

fn t(h: i64, m: i64, s: f64) -> i64 {
    MIDNIGHT + (h * 3600 + m * 60) * 1000 + (s * 1000.0).round() as i64
}

fn caller(n: u32) -> String {
    format!("010111100{n:02}")
}

#[derive(Default)]
struct Script {
    events: Vec<QueueEvent>,
    records: Vec<CallRecord>,
}

impl Script {
    fn ev(&mut self, at: i64, queue: &str, call: &str, agent: &str, kind: K) {
        self.events.push(QueueEvent {
            at_ms: at,
            tenant: TENANT.into(),
            queue: queue.into(),
            call: call.into(),
            agent: agent.into(),
            kind,
        });
    }
    fn state(&mut self, at: i64, agent: &str, state: &str) {
        self.ev(at, "", "", agent, K::AgentState { state: state.into(), reason: "test".into() });
    }
    fn enter(&mut self, at: i64, queue: &str, call: &str, caller: &str) {
        self.ev(at, queue, call, "", K::Enter { caller: caller.into(), priority: 0, position: 1, skill: String::new() });
    }
    fn record(&mut self, call: &str, caller: &str, arrived: i64, outcome: Outcome) {
        self.records.push(CallRecord {
            call_id: call.into(),
            tenant: Some(TENANT.into()),
            caller: caller.into(),
            number: "120".into(),
            arrived_ms: arrived,
            ended_ms: arrived + 60_000,
            outcome,
            ..Default::default()
        });
    }
    /// A caller entering `queue` at `enter` and answered by `agent` after `wait_s` (ring 3 s), talking
    /// `talk_s` + holding `hold_s`, then `wrap_s` of wrap-up; `transfer`: the agent transfers instead.
    #[allow(clippy::too_many_arguments)]
    fn answered(
        &mut self,
        call: &str,
        caller: &str,
        queue: &str,
        enter: i64,
        wait_s: f64,
        agent: &str,
        talk_s: u64,
        hold_s: u64,
        wrap_s: u64,
        subject: &str,
        settled: bool,
        transfer: bool,
    ) {
        self.enter(enter, queue, call, caller);
        self.record(call, caller, enter - 13_000, Outcome::Completed);
        let connect = enter + (wait_s * 1000.0) as i64;
        self.connect(call, queue, agent, connect, (wait_s * 1000.0) as u64, talk_s, hold_s, wrap_s, subject, settled, transfer);
    }
    #[allow(clippy::too_many_arguments)]
    fn connect(
        &mut self,
        call: &str,
        queue: &str,
        agent: &str,
        connect: i64,
        wait_ms: u64,
        talk_s: u64,
        hold_s: u64,
        wrap_s: u64,
        subject: &str,
        settled: bool,
        transfer: bool,
    ) {
        self.state(connect - 3000, agent, "reserved");
        self.ev(connect - 3000, queue, call, agent, K::Offer { wait_ms: wait_ms - 3000 });
        self.ev(connect, queue, call, agent, K::Connect { wait_ms, ring_ms: 3000 });
        self.state(connect, agent, "talking");
        let end = connect + ((talk_s + hold_s) * 1000) as i64;
        if transfer {
            self.ev(end, queue, call, agent, K::Transfer { to: "dept-welfare".into(), talk_ms: talk_s * 1000 });
        } else {
            self.ev(end, queue, call, agent, K::Complete { talk_ms: talk_s * 1000, hold_ms: hold_s * 1000, by: "caller".into() });
        }
        self.state(end, agent, "wrapup");
        self.ev(end + 2000, queue, call, agent, K::Disposition { subject: subject.into(), settled, flag: String::new() });
        self.ev(end + (wrap_s * 1000) as i64, queue, call, agent, K::WrapupEnd { wrap_ms: wrap_s * 1000 });
        self.state(end + (wrap_s * 1000) as i64, agent, "ready");
    }
    fn abandon(&mut self, call: &str, caller: &str, enter: i64, wait_ms: u64, ringing: &str) {
        self.enter(enter, "general", call, caller);
        self.record(call, caller, enter - 13_000, Outcome::Abandoned);
        self.ev(enter + wait_ms as i64, "general", call, ringing, K::Abandon { wait_ms, position: 1 });
    }
}

fn day() -> Script {
    let mut s = Script::default();
    let g = "general";
    s.state(t(8, 55, 0.0), "1001", "ready");
    s.state(t(8, 55, 0.0), "1002", "ready");
    s.state(t(9, 0, 0.0), "1003", "ready");
    s.answered("c01", &caller(1), g, t(9, 0, 0.0), 5.0, "1001", 180, 0, 30, "traffic", true, false);
    s.answered("c02", &caller(2), g, t(9, 1, 0.0), 12.0, "1002", 240, 20, 40, "passports", true, false);
    s.abandon("c03", &caller(3), t(9, 2, 0.0), 3000, "");
    s.answered("c04", &caller(4), g, t(9, 3, 0.0), 35.0, "1001", 120, 0, 15, "tax", false, false);
    s.abandon("c05", &caller(5), t(9, 4, 0.0), 40_000, "");
    s.answered("c06", &caller(1), g, t(9, 5, 0.0), 55.0, "1001", 60, 0, 10, "traffic", true, false);
    s.answered("c07", &caller(7), g, t(9, 10, 0.0), 8.0, "1002", 300, 0, 30, "welfare", false, true);
    s.answered("c08", "anonymous", g, t(9, 12, 0.0), 20.0, "1001", 90, 0, 15, "events", true, false);
    s.answered("c09", &caller(9), g, t(9, 14, 50.0), 10.0, "1001", 200, 0, 20, "water", true, false);
    // c10: callback after 30 s; called back at 11:00 (wait since enqueue 100 min).
    s.enter(t(9, 20, 0.0), g, "c10", &caller(10));
    s.record("c10", &caller(10), t(9, 19, 47.0), Outcome::Completed);
    s.ev(t(9, 20, 30.0), g, "c10", "", K::CallbackRequested { number: caller(10), due_ms: t(9, 20, 30.0) });
    s.state(t(10, 59, 50.0), "1001", "reserved");
    s.ev(t(11, 0, 0.0), g, "c10", "1001", K::CallbackConnect { wait_ms: 6_000_000 });
    s.state(t(11, 0, 0.0), "1001", "talking");
    s.ev(t(11, 1, 40.0), g, "c10", "1001", K::Complete { talk_ms: 100_000, hold_ms: 0, by: "agent".into() });
    s.state(t(11, 1, 40.0), "1001", "wrapup");
    s.ev(t(11, 1, 45.0), g, "c10", "1001", K::Disposition { subject: "tax".into(), settled: true, flag: String::new() });
    s.ev(t(11, 1, 50.0), g, "c10", "1001", K::WrapupEnd { wrap_ms: 10_000 });
    s.state(t(11, 1, 50.0), "1001", "ready");
    // c11: overflow G → E after 100 s; 1003 answers at 09:23:10 (wait counted from the first enqueue).
    s.enter(t(9, 21, 0.0), g, "c11", &caller(11));
    s.record("c11", &caller(11), t(9, 20, 47.0), Outcome::Completed);
    s.ev(t(9, 22, 40.0), g, "c11", "", K::Overflow { to: "en".into(), wait_ms: 100_000 });
    s.enter(t(9, 22, 40.0), "en", "c11", &caller(11));
    s.connect("c11", "en", "1003", t(9, 23, 10.0), 130_000, 150, 0, 20, "passports", true, false);
    s.abandon("c12", &caller(12), t(9, 25, 0.0), 4999, "");
    s.abandon("c13", &caller(13), t(9, 26, 0.0), 5000, "");
    s.state(t(9, 16, 0.0), "1002", "not_ready");
    s.state(t(9, 40, 0.0), "1002", "ready");
    s.answered("c14", &caller(2), g, t(9, 31, 0.0), 15.0, "1001", 200, 30, 25, "passports", true, false);
    s.answered("c15", &caller(15), "en", t(9, 35, 0.0), 6.0, "1003", 100, 0, 10, "events", true, false);
    s.ev(t(9, 40, 0.0), g, "c16", "", K::Refused { caller: caller(16), reason: "full".into() });
    s.record("c16", &caller(16), t(9, 39, 47.0), Outcome::Busy);
    s.answered("c17", &caller(17), g, t(9, 45, 0.0), 19.0, "1001", 60, 0, 10, "environment", true, false);
    // The agent corrects c17's disposition during wrap-up (09:46:24).
    s.ev(t(9, 46, 24.0), g, "c17", "1001", K::Disposition { subject: "water".into(), settled: false, flag: "complaint".into() });
    // c18: 1001's phone rings from 09:50:10; the caller hangs up at 09:50:18.
    s.ev(t(9, 50, 10.0), g, "c18", "1001", K::Offer { wait_ms: 10_000 });
    s.state(t(9, 50, 10.0), "1001", "reserved");
    s.abandon("c18", &caller(18), t(9, 50, 0.0), 18_000, "1001");
    s.state(t(9, 50, 18.0), "1001", "ready");
    s.answered("c19", &caller(19), g, t(9, 55, 0.0), 9.0, "1002", 120, 0, 30, "traffic", true, false);
    s.answered("c20", &caller(20), "en", t(9, 58, 0.0), 25.0, "1003", 90, 0, 10, "tax", true, false);
    for a in ["1001", "1002", "1003"] {
        s.state(t(12, 0, 0.0), a, "logged_out");
    }
    // Calls that never reached a queue.
    s.record("r21", &caller(15), t(10, 30, 0.0), Outcome::Abandoned);
    s.record("r22", &caller(9), t(9, 14, 37.0) + 7 * DAY_MS, Outcome::Completed);
    s.record("r23", &caller(19), t(9, 54, 47.0) + 7 * DAY_MS + 1000, Outcome::Completed);
    // Events in the order they happened (stable: same-ms events keep their script order).
    s.events.sort_by_key(|e| e.at_ms);
    s.records.sort_by_key(|r| r.arrived_ms);
    s
}

fn config() -> StatsConfig {
    StatsConfig::default() // KS formula, 20 s / 5 s, +540, 7 days, 30-minute live interval, target 80 %
}

fn fed(cfg: StatsConfig) -> Stats {
    let s = day();
    let mut st = Stats::new(cfg);
    st.set_agent_queues(TENANT, "1001", &["general"]);
    st.set_agent_queues(TENANT, "1002", &["general"]);
    st.set_agent_queues(TENANT, "1003", &["en"]);
    for e in &s.events {
        st.push(e);
    }
    for r in &s.records {
        st.push_call(r);
    }
    st
}

fn may1() -> Date {
    Date::parse("2024-05-01").unwrap()
}

fn q(name: &str) -> Scope {
    Scope::Queue(TENANT.into(), name.into())
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {
        assert!(close($a, $b), "{} = {:?}, expected {}", stringify!($a), $a, $b)
    };
}

#[test]
fn queue_general_day_figures_equal_the_hand_count() {
    let st = fed(config());
    let f = st.day_figures(&q("general"), may1());
    // Offered (entered G): c01–c13 (13) + c14, c17, c18, c19 = 17. Answered: c01 c02 c04 c06 c07 c08 c09 c14 c17 c19 = 10; within 20 s: all but c04 (35 s)
    // and c06 (55 s) = 8.
    assert_eq!((f.offered, f.answered, f.answered_in_sl), (17, 10, 8));
    // Abandoned: c03 (3 s), c05 (40 s), c12 (4.999 s), c13 (5 s), c18 (18 s) = 5; short (< 5 s): c03, c12.
    assert_eq!((f.abandoned, f.short_abandoned), (5, 2));
    // 17 = 10 answered + 5 abandoned + 1 overflow (c11) + 1 callback (c10); c16 refused apart.
    assert_eq!((f.overflows, f.callbacks_requested, f.refused, f.timeouts), (1, 1, 1, 0));
    assert_close!(f.service_level, 8.0 / 17.0);
    assert_close!(f.ks_service_level_20s, 8.0 / 17.0);
    assert_close!(f.ks_abandonment, 5.0 / 17.0);
    assert_close!(f.answer_rate, 10.0 / 17.0);
    // ASA: 5+12+35+55+8+20+10+15+19+9 = 188 s over 10.
    assert_close!(f.asa_s, 18.8);
    assert_eq!(f.max_wait_answered_s, 55.0);
    // Handled: the 10 answered (c07 by transfer) + c10's callback conversation = 11.
    // Talk 180+240+120+60+300+90+200+200+60+120+100 = 1670 s; hold 20+30 = 50 s;
    // wrap 30+40+15+10+30+15+20+25+10+30+10 = 235 s. AHT = 1955 / 11.
    assert_eq!((f.handled, f.transfers, f.callbacks_connected), (11, 1, 1));
    assert_eq!((f.talk_s, f.hold_s, f.wrap_s), (1670.0, 50.0, 235.0));
    assert_close!(f.aht_s, 1955.0 / 11.0);
    // Dispositions: 11, settled: c01 c02 c06 c08 c09 c14 c19 c10 = 8 (c17 was changed to not settled).
    assert_eq!((f.dispositions, f.settled, f.complaints), (11, 8, 1));
    let subjects: Vec<(&str, u64)> = f.subjects.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(subjects, [("events", 1), ("passports", 2), ("tax", 2), ("traffic", 3), ("water", 2), ("welfare", 1)]);
    // FCR: answered with a known number = 9 (c08 anonymous is untracked). Resolved: c06 (settled, no
    // later call from ...001), c14 (settled, none from ...002 after it), c19 (its repeat r23 is 1 s past
    // the 7 days). Not: c01 (repeat c06), c02 (repeat c14), c04/c07/c17 (not settled), c09 (r22 exactly
    // at 7 days is inside the window). 3 / 9.
    assert_eq!((f.fcr_calls, f.fcr_resolved, f.fcr_untracked, f.fcr_open), (9, 3, 1, 0));
    assert_close!(f.ks_fcr, 3.0 / 9.0);
}

#[test]
fn the_sl_formula_is_the_centres_choice() {
    // (offered 17, answered in 20 s 8, short abandons 2, answered 10, abandoned 5, abandoned within 20 s 4:
    //  c03 c12 c13 c18.)
    let cases = [
        (SlFormula::AnsweredOfOffered, 8.0 / 17.0),
        (SlFormula::AnsweredOfOfferedLessShortAbandons, 8.0 / 15.0),
        (SlFormula::AnsweredOfAnsweredAndAbandoned, 8.0 / 15.0),
        (SlFormula::AnsweredOrAbandonedWithinOfOffered, 12.0 / 17.0),
    ];
    for (formula, want) in cases {
        let st = fed(StatsConfig { sl_formula: formula, ..config() });
        let f = st.day_figures(&q("general"), may1());
        assert_close!(f.service_level, want);
        // The KS figure does not depend on the choice.
        assert_close!(f.ks_service_level_20s, 8.0 / 17.0);
        assert_eq!(SlFormula::from_name(formula.name()), Some(formula));
    }
    // A queue with a 10 s threshold: within 10 s only c01 (5), c07 (8), c09 (10), c19 (9) = 4.
    let mut cfg = config();
    cfg.queue_thresholds.insert(
        (TENANT.into(), "general".into()),
        callgate::stats::Thresholds { sl_ms: 10_000, short_abandon_ms: 5_000 },
    );
    let f = fed(cfg).day_figures(&q("general"), may1());
    assert_close!(f.service_level, 4.0 / 17.0);
    assert_close!(f.ks_service_level_20s, 8.0 / 17.0);
}

#[test]
fn queue_en_and_tenant_day_figures() {
    let st = fed(config());
    let e = st.day_figures(&q("en"), may1());
    // E: c11 (overflowed in, 130 s), c15 (6 s), c20 (25 s): 3 offered, 3 answered, 1 within 20 s.
    assert_eq!((e.offered, e.answered, e.answered_in_sl, e.abandoned), (3, 3, 1, 0));
    assert_close!(e.service_level, 1.0 / 3.0);
    assert_close!(e.asa_s, 161.0 / 3.0);
    // Talk 150+100+90 = 340, wrap 20+10+10 = 40 → AHT 380/3.
    assert_close!(e.aht_s, 380.0 / 3.0);
    // FCR: c11 resolved, c15 repeated by r21 (abandoned in the announcement the same day), c20 resolved
    // so far — its 7 days are not over at the newest time seen (r23), so it is still open.
    assert_eq!((e.fcr_calls, e.fcr_resolved, e.fcr_open), (3, 2, 1));

    let d = st.day_figures(&Scope::Tenant(TENANT.into()), may1());
    // Each call once: 19 entered (c11 once, c16 refused); answered 10 + 3; within 20 s 8 + 1.
    assert_eq!((d.offered, d.answered, d.answered_in_sl, d.refused), (19, 13, 9, 1));
    assert_eq!((d.abandoned, d.short_abandoned, d.overflows), (5, 2, 0));
    assert_close!(d.ks_service_level_20s, 9.0 / 19.0);
    assert_close!(d.ks_abandonment, 5.0 / 19.0);
    assert_close!(d.asa_s, 349.0 / 13.0);
    // Handled 11 + 3 = 14; talk 2010, hold 50, wrap 275.
    assert_eq!(d.handled, 14);
    assert_close!(d.aht_s, 2335.0 / 14.0);
    // r21 ended in the announcement: the only call that never reached a queue (c03 etc. abandoned in one).
    assert_eq!(d.abandoned_before_queue, 1);
    assert_eq!((d.fcr_calls, d.fcr_resolved, d.fcr_untracked), (12, 5, 1));
    assert_close!(d.ks_fcr, 5.0 / 12.0);
}

#[test]
fn fcr_windows_close_with_time() {
    let mut st = fed(config());
    // Eight days later nothing is open any more, and nothing changed.
    st.observe(MIDNIGHT + 9 * DAY_MS);
    let e = st.day_figures(&q("en"), may1());
    assert_eq!((e.fcr_calls, e.fcr_resolved, e.fcr_open), (3, 2, 0));
    // A shorter window (1 day): r22/r23 no longer matter, c09 and c19 resolved; still 3 + … for G:
    // c06, c09, c14, c19 = 4 of 9.
    let st = fed(StatsConfig { fcr_window_days: 1, ..config() });
    let g = st.day_figures(&q("general"), may1());
    assert_eq!((g.fcr_calls, g.fcr_resolved), (9, 4));
}

#[test]
fn intervals_take_calls_by_arrival() {
    let st = fed(config());
    let r = st.report(TENANT, may1(), IntervalLen::M30);
    let row = |scope: &str, name: &str, start: &str| {
        r.rows
            .iter()
            .find(|x| x.scope == scope && x.name == name && x.start == start)
            .unwrap_or_else(|| panic!("no row {scope} {name} {start}"))
    };
    // The tenant and the 2 queues: all 48 intervals. Agents: the intervals they were logged in —
    // 1001 and 1002 08:55–12:00 (08:30 … 11:30: 7 each), 1003 09:00–12:00 (6).
    assert_eq!(r.rows.len(), 48 * 3 + 7 + 7 + 6);
    assert!(r.rows.iter().filter(|x| x.scope == "agent" && x.name == "1003").all(|x| x.start.as_str() >= "2024-05-01T09:00"));
    let g9 = &row("queue", "general", "2024-05-01T09:00+09:00").figures;
    // 09:00–09:30: c01–c13 entered G: 13; answered c01 c02 c04 c06 c07 c08 c09 = 7 (c09 at 09:15:00 still
    // counts here: it arrived 09:14:50); within 20 s c01 c02 c07 c08 c09 = 5; abandoned c03 c05 c12 c13.
    assert_eq!((g9.offered, g9.answered, g9.answered_in_sl, g9.abandoned, g9.short_abandoned), (13, 7, 5, 4, 2));
    assert_close!(g9.service_level, 5.0 / 13.0);
    let g930 = &row("queue", "general", "2024-05-01T09:30+09:00").figures;
    // 09:30–10:00: c14 c17 c18 c19 entered; 3 answered, all within 20 s; c18 abandoned; c16 refused.
    assert_eq!((g930.offered, g930.answered, g930.answered_in_sl, g930.abandoned, g930.refused), (4, 3, 3, 1, 1));
    assert_close!(g930.asa_s, 43.0 / 3.0);
    // Talk 200+60+120 = 380, hold 30, wrap 25+10+30 = 65 → 475 / 3.
    assert_close!(g930.aht_s, 475.0 / 3.0);
    let e930 = &row("queue", "en", "2024-05-01T09:30+09:00").figures;
    assert_eq!((e930.offered, e930.answered, e930.answered_in_sl), (2, 2, 1));

    // 15-minute slots show the arrival rule: c09 (09:14:50, answered 09:15:00) is in 09:00–09:15.
    let r15 = st.report(TENANT, may1(), IntervalLen::M15);
    let g = |start: &str| {
        r15.rows.iter().find(|x| x.scope == "queue" && x.name == "general" && x.start == start).unwrap().figures.clone()
    };
    assert_eq!((g("2024-05-01T09:00+09:00").offered, g("2024-05-01T09:00+09:00").answered), (9, 7));
    let g915 = g("2024-05-01T09:15+09:00");
    // c10 c11 c12 c13: none answered; c10's callback conversation (11:00) is handled here.
    assert_eq!((g915.offered, g915.answered, g915.handled, g915.talk_s), (4, 0, 1, 100.0));
    // 60-minute: 09:00–10:00 holds all 17 of G.
    let r60 = st.report(TENANT, may1(), IntervalLen::M60);
    let g60 = r60.rows.iter().find(|x| x.scope == "queue" && x.name == "general" && x.start == "2024-05-01T09:00+09:00").unwrap();
    assert_eq!(g60.figures.offered, 17);
}

#[test]
fn agent_rows_occupancy_and_staffing() {
    let st = fed(config());
    let r = st.report(TENANT, may1(), IntervalLen::M30);
    let row = |scope: &str, name: &str, start: &str| {
        r.rows.iter().find(|x| x.scope == scope && x.name == name && x.start == start).unwrap()
    };
    // 1003, 09:00–09:30: logged in 09:00:00; busy with c11 from the ring at 09:23:07 to the end of
    // wrap-up at 09:26:00 = 173 s; ready the other 1627 s.
    let a3 = &row("agent", "1003", "2024-05-01T09:00+09:00").figures;
    assert_close!(a3.occupancy, 173.0 / 1800.0);
    assert_eq!(a3.agents_staffed, 1.0);
    // 09:30–10:00: c15 09:35:03–09:36:56 = 113 s, c20 09:58:22–10:00:00 (of a wrap-up ending 10:00:05) = 98 s.
    let a3b = &row("agent", "1003", "2024-05-01T09:30+09:00").figures;
    assert_close!(a3b.occupancy, 211.0 / 1800.0);
    // 1002, 09:00–09:30: c02 09:01:09–09:06:12 = 303 s, c07 09:10:05–09:15:38 = 333 s busy; not ready
    // 09:16–09:30 = 840 s; ready 1800 − 303 − 333 − 840 = 324 s. Occupancy 636 / 960.
    let a2 = &row("agent", "1002", "2024-05-01T09:00+09:00").figures;
    assert_close!(a2.occupancy, 636.0 / 960.0);
    // 1001, 09:00–09:30: offered and answered c01 c04 c06 c08 c09 (answered 09:15:00) = 5; talk
    // 180+120+60+90+200 = 650, wrap 30+15+10+15+20 = 90 → AHT 148 s.
    let a1 = &row("agent", "1001", "2024-05-01T09:00+09:00").figures;
    assert_eq!((a1.offered, a1.answered, a1.handled), (5, 5, 5));
    assert_close!(a1.aht_s, 148.0);
    // 09:30–10:00: offers c14 c17 c18; answered c14 c17; c18 hung up while it rang.
    let a1b = &row("agent", "1001", "2024-05-01T09:30+09:00").figures;
    assert_eq!((a1b.offered, a1b.answered, a1b.abandoned), (3, 2, 1));
    // Queue en's occupancy is its agent group's (1003 only).
    assert_close!(row("queue", "en", "2024-05-01T09:00+09:00").figures.occupancy, 173.0 / 1800.0);

    // Staffing, G 09:00–09:30: 13 calls in 1800 s; handled 8 (c01 c02 c04 c06 c07 c08 c09 + c10's
    // callback): talk 1290 + hold 20 + wrap 170 = 1480 s → AHT 185 s; A = 13/1800 × 185 = 1.3361 E.
    // Erlang C at 20 s: 2 agents 50.2 %, 3 agents 84.8 % → 3 needed for 80 %. Checked with:
    //   python3 -c "import math;A=13/1800*185;C=lambda n:(A**n/math.factorial(n)*n/(n-A))/(sum(A**k/math.factorial(k) for k in range(n))+A**n/math.factorial(n)*n/(n-A));print([1-C(n)*math.exp(-(n-A)*20/185) for n in (2,3)])"
    //   → [0.5019481471008527, 0.8482411045367578]
    let g9 = row("queue", "general", "2024-05-01T09:00+09:00");
    assert_close!(g9.figures.aht_s, 185.0);
    assert_close!(g9.traffic_erlangs, 13.0 / 1800.0 * 185.0);
    assert_eq!(g9.agents_needed, Some(3));
    // Beside it, the agents actually logged in: 1001 and 1002 all 30 minutes.
    assert_eq!(g9.figures.agents_staffed, 2.0);
    // An interval without calls needs nobody.
    assert_eq!(row("queue", "general", "2024-05-01T03:00+09:00").agents_needed, Some(0));
}

#[test]
fn live_wallboard_at_09_50_15() {
    let s = day();
    let mut st = Stats::new(config());
    st.set_agent_queues(TENANT, "1001", &["general"]);
    st.set_agent_queues(TENANT, "1002", &["general"]);
    st.set_agent_queues(TENANT, "1003", &["en"]);
    let now = t(9, 50, 15.0);
    for e in s.events.iter().filter(|e| e.at_ms <= now) {
        st.push(e);
    }
    let g = st.live_queue(TENANT, "general", now);
    // c18 is waiting (1001's phone rings for it) since 09:50:00.
    assert_eq!(g.waiting, 1);
    assert_eq!(g.longest_wait_s, Some(15.0));
    // 1001 reserved (ringing), 1002 ready again since 09:40.
    assert_eq!((g.agents.logged_in, g.agents.ready, g.agents.reserved, g.agents.talking), (2, 1, 1, 0));
    // Today so far: c01–c14 minus c15/c16 … entered G: c01–c13, c14, c17, c18 = 16; answered 9.
    assert_eq!((g.today.offered, g.today.answered, g.today.abandoned), (16, 9, 4));
    // Current interval 09:30–10:00: c14, c17, c18 entered; c14, c17 answered.
    assert_eq!(g.interval_start, "2024-05-01T09:30+09:00");
    assert_eq!((g.interval.offered, g.interval.answered), (3, 2));
    let all = st.live_tenant(TENANT, now);
    assert_eq!((all.agents.logged_in, all.agents.ready, all.agents.reserved), (3, 2, 1));
    assert_eq!(all.waiting, 1);
    assert_eq!(all.day, "2024-05-01");
    // Live agent time is counted up to now (the interval so far is 20:15 = 1215 s). G's group: 1001 busy
    // 09:31:12–09:35:30 (c14: 258 s), 09:45:16–09:46:29 (c17: 73 s), 09:50:10–now (c18 ringing: 5 s) =
    // 336 s, ready 1215 − 336 = 879 s; 1002 not ready 09:30–09:40, ready 09:40:00–09:50:15 = 615 s.
    // Occupancy = busy / (busy + ready) = 336 / (336 + 879 + 615).
    assert_close!(g.interval.occupancy, 336.0 / 1830.0);
}

#[test]
fn reports_render_as_json_and_csv() {
    let st = fed(config());
    let r = st.report(TENANT, may1(), IntervalLen::M60);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["tenant"], "demo");
    assert_eq!(v["sl_formula"], "answered_of_offered");
    let rows = v["rows"].as_array().unwrap();
    // 24 × (tenant + 2 queues) + agents' logged-in hours: 1001, 1002 08–11 (4 each), 1003 09–11 (3).
    assert_eq!(rows.len(), 24 * 3 + 4 + 4 + 3);
    let g9 = rows.iter().find(|x| x["scope"] == "queue" && x["name"] == "general" && x["start"] == "2024-05-01T09:00+09:00").unwrap();
    assert_eq!(g9["offered"], 17);
    assert_eq!(g9["subjects"]["traffic"], 3);
    assert!(g9["service_level"].as_f64().is_some_and(|x| (x - 8.0 / 17.0).abs() < 1e-12));
    let quiet = rows.iter().find(|x| x["scope"] == "queue" && x["name"] == "general" && x["start"] == "2024-05-01T03:00+09:00").unwrap();
    assert!(quiet["service_level"].is_null(), "no offered calls: no service level, not 0 or 100 %");

    let csv = r.to_csv();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1 + 24 * 3 + 4 + 4 + 3);
    let header: Vec<&str> = lines[0].split(',').collect();
    let line = lines.iter().find(|l| l.starts_with("queue,general,2024-05-01T09:00+09:00,")).unwrap();
    let cells: Vec<&str> = line.split(',').collect();
    assert_eq!(cells.len(), header.len());
    let cell = |name: &str| cells[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("offered"), "17");
    assert_eq!(cell("service_level"), "0.4706");
    assert_eq!(cell("subjects"), "events:1;passports:2;tax:2;traffic:3;water:2;welfare:1");
    let quiet = lines.iter().find(|l| l.starts_with("queue,general,2024-05-01T03:00+09:00,")).unwrap();
    let qc: Vec<&str> = quiet.split(',').collect();
    assert_eq!(qc[header.iter().position(|h| *h == "service_level").unwrap()], "");
}

#[test]
fn erlang_c_published_values() {
    // The classic example: 10 erlangs, 12 agents, AHT 180 s, target 20 s:
    // P(wait) = 0.4494, SL = 64.0 %, ASA = 40.4 s; 14 agents reach 80/20 (88.8 %), 13 do not (79.6 %).
    // Cross-checked with the textbook formula in Python:
    //   python3 -c "import math;A=10.0;f=math.factorial;C=lambda n:(A**n/f(n)*n/(n-A))/(sum(A**k/f(k) for k in range(n))+A**n/f(n)*n/(n-A));print(C(12),1-C(12)*math.exp(-2*20/180),C(12)*180/2,[1-C(n)*math.exp(-(n-A)*20/180) for n in (13,14)])"
    //   → 0.44938822429827086 0.6401580403740066 40.44494018684438 [0.7955947884177831, 0.8883500191794669]
    assert!((erlang::erlang_c(12, 10.0) - 0.44938822429827086).abs() < 1e-12);
    assert!((erlang::service_level(12, 10.0, 180.0, 20.0) - 0.6401580403740066).abs() < 1e-12);
    assert!((erlang::asa(12, 10.0, 180.0) - 40.44494018684438).abs() < 1e-9);
    assert!((erlang::service_level(13, 10.0, 180.0, 20.0) - 0.7955947884177831).abs() < 1e-12);
    assert!((erlang::service_level(14, 10.0, 180.0, 20.0) - 0.8883500191794669).abs() < 1e-12);
    assert_eq!(erlang::agents_needed(10.0, 180.0, 20.0, 0.8), 14);
    // Erlang B table value: B(10, 10 E) = 0.2146.
    assert!((erlang::erlang_b(10, 10.0) - 0.21458234).abs() < 1e-6);
    // Large centres: 4,100 calls a day ≈ 410 an hour at peak × 240 s = 27.3 E; the recursion stays stable
    // for hundreds of agents.
    let n = erlang::agents_needed(300.0, 240.0, 20.0, 0.8);
    assert!(erlang::service_level(n, 300.0, 240.0, 20.0) >= 0.8 && erlang::service_level(n - 1, 300.0, 240.0, 20.0) < 0.8);
}

#[test]
fn the_day_read_back_from_the_records_database_gives_the_same_report() {
    use callgate::records::{RecordWriter, RecordsReader};
    let dir = std::env::temp_dir().join(format!("callgate-stats-day-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("calls.sqlite");
    let s = day();
    let w = RecordWriter::open(&path).unwrap();
    for e in &s.events {
        w.sink().submit_queue(e.clone());
    }
    for r in &s.records {
        w.submit(r.clone());
    }
    // Another tenant's events on the same day stay out of demo's report.
    let mut other = s.events[5].clone();
    other.tenant = "goyang".into();
    w.sink().submit_queue(other);
    w.close().unwrap();

    let mut from_db = Stats::new(config());
    for (a, q) in [("1001", "general"), ("1002", "general"), ("1003", "en")] {
        from_db.set_agent_queues(TENANT, a, &[q]);
    }
    RecordsReader::open(&path).unwrap().load_day(&mut from_db, TENANT, may1()).unwrap();
    let live = fed(config());
    for len in [IntervalLen::M15, IntervalLen::M30, IntervalLen::M60] {
        assert_eq!(from_db.report(TENANT, may1(), len).to_json(), live.report(TENANT, may1(), len).to_json());
    }
    assert_eq!(from_db.day_figures(&q("general"), may1()).offered, 17);
    let _ = std::fs::remove_dir_all(&dir);
}
