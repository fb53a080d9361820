//! Opening hours: `[[schedule]]` tables of a tenant file, and the civil calendar they need.
//!
//! A schedule says, for every local date, during which minutes a service is open. The hours of a date
//! come from the first of these that applies:
//!
//! 1. an **override** for exactly that date (`[[schedule.override]]`, `hours = []` = closed all day);
//! 2. a **holiday** (a fixed date `"2025-10-03"` or a yearly date `"12-25"`): `holiday_hours`
//!    (default `[]`, closed all day);
//! 3. the **weekday**'s hours (`mon` … `sun`; a weekday not written is closed).
//!
//! Hours are `"HH:MM-HH:MM"` ranges in the tenant's local time: start inclusive, end exclusive;
//! `"24:00"` may end a range. A range whose end is not after its start **wraps past midnight**
//! (`"22:00-06:00"`): it belongs to the date it starts on (like a night shift), whatever the next date's
//! own hours are. Ranges may overlap; the service is open in their union.
//!
//! Local time is Unix time plus the tenant's fixed UTC offset (`utc_offset`, default +09:00, Korea). There
//! is no daylight-saving time (Korea has none); a centre in a zone with DST would write its offset and
//! change it twice a year. Civil dates are computed here from Unix time (proleptic Gregorian calendar)
//! without a date library.

use std::fmt;

/// Minutes in a day.
const DAY_MIN: i64 = 1440;
const MS_PER_MIN: i64 = 60_000;
const MS_PER_DAY: i64 = 86_400_000;
/// How far [`ScheduleCfg::next_change`] looks ahead (days): covers a year of yearly holidays.
pub const NEXT_CHANGE_HORIZON_DAYS: i64 = 400;

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Monday first, as in `ScheduleCfg::weekly`.
    pub const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    /// The weekday of a day counted from 1970-01-01 (a Thursday); negative days are before it.
    pub fn from_days(days: i64) -> Weekday {
        // 1970-01-01 is index 3 (Thu) with Monday = 0.
        Weekday::ALL[(days + 3).rem_euclid(7) as usize]
    }

    /// 0 for Monday … 6 for Sunday.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The TOML key: `"mon"` … `"sun"`.
    pub fn key(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self as usize]
    }
}

/// A date of the proleptic Gregorian calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CivilDate {
    pub year: i32,
    /// 1 to 12.
    pub month: u8,
    /// 1 to the month's length.
    pub day: u8,
}

/// Why a text is not a date.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("expected YYYY-MM-DD, e.g. \"2025-10-03\"{}", if *.yearly { " (or MM-DD for every year)" } else { "" })]
    Syntax { yearly: bool },
    #[error("month {month} does not exist (expected 1 to 12)")]
    BadMonth { month: u32 },
    #[error("day {day} does not exist in month {month}{} (expected 1 to {max})", year.map(|y| format!(" of {y}")).unwrap_or_default())]
    BadDay { year: Option<i32>, month: u32, day: u32, max: u32 },
}

/// Whether `year` has a 29 February.
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in a month of a year (February 29 days in leap years).
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl CivilDate {
    /// A valid date, or None.
    pub fn new(year: i32, month: u8, day: u8) -> Option<CivilDate> {
        if (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month) {
            Some(CivilDate { year, month, day })
        } else {
            None
        }
    }

    /// Days since 1970-01-01 (negative before it).
    ///
    /// Counts in 400-year eras of 146097 days that start on 1 March, so that the leap day is the last
    /// day of its "year" and month lengths from March on repeat in a fixed pattern (153 days per five
    /// months: `(153 * m + 2) / 5` is the day of the year at which month `m`, counted from March, starts).
    pub fn to_days(self) -> i64 {
        let m = i64::from(self.month);
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400; // 0..=399
        let mp = (m + 9) % 12; // March = 0 … February = 11
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1; // 0..=365
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
        era * 146_097 + doe - 719_468 // 719468: days from 0000-03-01 to 1970-01-01
    }

    /// The date `days` after 1970-01-01: the inverse of [`CivilDate::to_days`].
    pub fn from_days(days: i64) -> CivilDate {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097; // 0..=146096
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
        let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        CivilDate { year: year as i32, month: month as u8, day: day as u8 }
    }

    pub fn weekday(self) -> Weekday {
        Weekday::from_days(self.to_days())
    }

    /// `YYYY-MM-DD` (four-digit year).
    pub fn parse(s: &str) -> Result<CivilDate, DateError> {
        match parse_date_or_yearly(s, false)? {
            HolidayDate::Date(d) => Ok(d),
            HolidayDate::Yearly { .. } => Err(DateError::Syntax { yearly: false }),
        }
    }
}

impl fmt::Display for CivilDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A holiday: one date, or the same month and day every year (`"12-25"`; `"02-29"` only in leap years).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HolidayDate {
    Date(CivilDate),
    Yearly { month: u8, day: u8 },
}

impl HolidayDate {
    /// `YYYY-MM-DD` or `MM-DD`.
    pub fn parse(s: &str) -> Result<HolidayDate, DateError> {
        parse_date_or_yearly(s, true)
    }

    pub fn matches(&self, d: CivilDate) -> bool {
        match *self {
            HolidayDate::Date(x) => x == d,
            HolidayDate::Yearly { month, day } => d.month == month && d.day == day,
        }
    }
}

impl fmt::Display for HolidayDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HolidayDate::Date(d) => d.fmt(f),
            HolidayDate::Yearly { month, day } => write!(f, "{month:02}-{day:02}"),
        }
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn parse_date_or_yearly(s: &str, yearly: bool) -> Result<HolidayDate, DateError> {
    let syntax = DateError::Syntax { yearly };
    let parts: Vec<&str> = s.trim().split('-').collect();
    let (year, month, day) = match parts.as_slice() {
        [y, m, d] => (Some(digits(y, 4).ok_or(syntax.clone())? as i32), *m, *d),
        [m, d] if yearly => (None, *m, *d),
        _ => return Err(syntax),
    };
    let month = digits(month, 2).ok_or(syntax.clone())?;
    let day = digits(day, 2).ok_or(syntax)?;
    if !(1..=12).contains(&month) {
        return Err(DateError::BadMonth { month });
    }
    // A yearly date may be 29 February (it then applies in leap years only).
    let max = u32::from(days_in_month(year.unwrap_or(2000), month as u8));
    if day < 1 || day > max {
        return Err(DateError::BadDay { year, month, day, max });
    }
    Ok(match year {
        Some(year) => HolidayDate::Date(CivilDate { year, month: month as u8, day: day as u8 }),
        None => HolidayDate::Yearly { month: month as u8, day: day as u8 },
    })
}

/// Opening minutes of one date: `start` inclusive, `end` exclusive, in minutes after local midnight.
/// `end <= start` wraps past midnight into the next date (`22:00-06:00` is 1320..360).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeRange {
    /// 0 to 1439.
    pub start: u16,
    /// 1 to 1440; not equal to `start`.
    pub end: u16,
}

/// Why a text is not an `HH:MM-HH:MM` range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeRangeError {
    #[error("expected HH:MM-HH:MM, e.g. \"08:00-19:00\"")]
    Syntax,
    #[error("{text:?} is not a time of day (expected HH:MM from 00:00 to 23:59, or 24:00 as an end)")]
    BadTime { text: String },
    #[error("the range is empty (start = end); write \"00:00-24:00\" for the whole day")]
    Empty,
}

fn parse_hhmm(t: &str) -> Result<u16, TimeRangeError> {
    let bad = || TimeRangeError::BadTime { text: t.to_string() };
    let (h, m) = t.split_once(':').ok_or_else(bad)?;
    let h = digits(h, 2).or_else(|| digits(h, 1)).ok_or_else(bad)?;
    let m = digits(m, 2).ok_or_else(bad)?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok((h * 60 + m) as u16)
}

impl TimeRange {
    /// `HH:MM-HH:MM`; `24:00` only as an end, `H:MM` accepted.
    pub fn parse(s: &str) -> Result<TimeRange, TimeRangeError> {
        let (a, b) = s.split_once('-').ok_or(TimeRangeError::Syntax)?;
        let (a, b) = (a.trim(), b.trim());
        let start = parse_hhmm(a)?;
        if start == 1440 {
            return Err(TimeRangeError::BadTime { text: a.to_string() });
        }
        let end = parse_hhmm(b)?;
        if end == start {
            return Err(TimeRangeError::Empty);
        }
        // 00:00 as an end means the next midnight, which 24:00 says without wrapping.
        let end = if end == 0 { 1440 } else { end };
        Ok(TimeRange { start, end })
    }

    /// Whether the range runs past midnight into the next date.
    pub fn wraps(&self) -> bool {
        self.end <= self.start
    }

    /// The minutes covered, counted from the start of the range's own date (end up to 2880).
    fn span(&self) -> (i64, i64) {
        let s = i64::from(self.start);
        let e = i64::from(self.end);
        (s, if self.wraps() { e + DAY_MIN } else { e })
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.start / 60, self.start % 60, self.end / 60, self.end % 60)
    }
}

/// `[[schedule]]`: when services using it are open.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScheduleCfg {
    pub name: String,
    /// Monday first ([`Weekday::index`]). Each list sorted by start. Empty: closed that weekday.
    pub weekly: [Vec<TimeRange>; 7],
    /// Dates whose hours are `holiday_hours`.
    pub holidays: Vec<HolidayDate>,
    /// Hours on holidays; empty (the default) = closed all day.
    pub holiday_hours: Vec<TimeRange>,
    /// Exact dates with their own hours (empty = closed); these beat holidays and weekdays.
    pub overrides: Vec<(CivilDate, Vec<TimeRange>)>,
}

impl ScheduleCfg {
    /// A schedule open around the clock every day.
    pub fn always_open(name: &str) -> ScheduleCfg {
        let all = vec![TimeRange { start: 0, end: 1440 }];
        ScheduleCfg { name: name.to_string(), weekly: std::array::from_fn(|_| all.clone()), ..Default::default() }
    }

    /// The hours of the local date `days` after 1970-01-01: override, else holiday, else weekday.
    pub fn hours_of_day(&self, days: i64) -> &[TimeRange] {
        let date = CivilDate::from_days(days);
        if let Some((_, h)) = self.overrides.iter().find(|(d, _)| *d == date) {
            return h;
        }
        if self.holidays.iter().any(|h| h.matches(date)) {
            return &self.holiday_hours;
        }
        &self.weekly[Weekday::from_days(days).index()]
    }

    /// Whether the schedule is open at `unix_ms` for a tenant at `utc_offset_min` minutes east of UTC.
    pub fn is_open(&self, unix_ms: i64, utc_offset_min: i32) -> bool {
        let (day, minute) = local_day_minute(unix_ms, utc_offset_min);
        self.hours_of_day(day).iter().any(|r| {
            let (s, e) = r.span();
            s <= minute && minute < e
        }) || self.hours_of_day(day - 1).iter().any(|r| {
            let (_, e) = r.span();
            r.wraps() && minute < e - DAY_MIN
        })
    }

    /// The first instant (Unix ms) after `unix_ms` at which [`ScheduleCfg::is_open`] changes: a minute
    /// boundary of local time. None if it does not change within [`NEXT_CHANGE_HORIZON_DAYS`] days
    /// (e.g. open 24/7, or never open).
    pub fn next_change(&self, unix_ms: i64, utc_offset_min: i32) -> Option<i64> {
        let off = i64::from(utc_offset_min);
        let now = (unix_ms + off * MS_PER_MIN).div_euclid(MS_PER_MIN); // local minute, absolute
        let today = now.div_euclid(DAY_MIN);
        let to_unix = |local_min: i64| (local_min - off) * MS_PER_MIN;
        // Ranges in order of their start (each day's list is sorted, and days are visited in order),
        // merged as they come: `cur` is the union of the ranges met so far that touch each other.
        let mut cur: Option<(i64, i64)> = None;
        for day in today - 1..=today + NEXT_CHANGE_HORIZON_DAYS {
            for r in self.hours_of_day(day) {
                let (s, e) = r.span();
                let (s, e) = (day * DAY_MIN + s, day * DAY_MIN + e);
                match cur {
                    Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
                    _ => {
                        if let Some((cs, ce)) = cur {
                            // A gap after [cs, ce): that union is complete.
                            if cs <= now && now < ce {
                                return Some(to_unix(ce));
                            }
                        }
                        if s > now {
                            // Closed now (nothing covered `now`), opens at s.
                            return Some(to_unix(s));
                        }
                        cur = Some((s, e));
                    }
                }
            }
        }
        match cur {
            // Open now and still open at the horizon, or closed to the end of it.
            Some((cs, ce)) if cs <= now && now < ce && ce <= (today + NEXT_CHANGE_HORIZON_DAYS) * DAY_MIN => {
                Some(to_unix(ce))
            }
            _ => None,
        }
    }
}

/// The local date (days since 1970-01-01) and minute of the day of `unix_ms` at a fixed UTC offset.
pub fn local_day_minute(unix_ms: i64, utc_offset_min: i32) -> (i64, i64) {
    let local = unix_ms + i64::from(utc_offset_min) * MS_PER_MIN;
    (local.div_euclid(MS_PER_DAY), local.rem_euclid(MS_PER_DAY) / MS_PER_MIN)
}

/// The local civil date of `unix_ms` at a fixed UTC offset.
pub fn local_date(unix_ms: i64, utc_offset_min: i32) -> CivilDate {
    CivilDate::from_days(local_day_minute(unix_ms, utc_offset_min).0)
}

/// `+HH:MM` / `-HH:MM` (also `+H`, `+HH`, `+HHMM`, `Z`) → minutes east of UTC, within -12:00 to +14:00.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    if s == "Z" || s == "z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "00"),
    };
    let h = digits(h, 2).or_else(|| digits(h, 1))?;
    let m = digits(m, 2)?;
    if m > 59 {
        return None;
    }
    let total = sign * (h as i32 * 60 + m as i32);
    (-12 * 60..=14 * 60).contains(&total).then_some(total)
}

/// `+09:00` style.
pub fn format_utc_offset(min: i32) -> String {
    let sign = if min < 0 { '-' } else { '+' };
    let a = min.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 60, a % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(CivilDate::from_days(0), CivilDate { year: 1970, month: 1, day: 1 });
        assert_eq!(CivilDate::new(1970, 1, 1).unwrap().to_days(), 0);
        assert_eq!(CivilDate::new(2000, 3, 1).unwrap().to_days(), 11017);
        assert_eq!(CivilDate::from_days(-1), CivilDate { year: 1969, month: 12, day: 31 });
        assert_eq!(Weekday::from_days(0), Weekday::Thu);
        assert_eq!(Weekday::from_days(-1), Weekday::Wed);
        for d in -800_000..800_000 {
            let c = CivilDate::from_days(d);
            assert!(CivilDate::new(c.year, c.month, c.day).is_some(), "{c:?}");
            assert_eq!(c.to_days(), d, "{c:?}");
        }
        assert_eq!(CivilDate::new(2024, 2, 29).unwrap().weekday(), Weekday::Thu);
        assert!(CivilDate::new(2025, 2, 29).is_none());
        assert!(CivilDate::new(1900, 2, 29).is_none());
        assert!(CivilDate::new(2000, 2, 29).is_some());
    }

    #[test]
    fn parses_dates_times_offsets() {
        assert_eq!(CivilDate::parse("2025-10-03"), Ok(CivilDate { year: 2025, month: 10, day: 3 }));
        assert_eq!(CivilDate::parse("2025-13-01"), Err(DateError::BadMonth { month: 13 }));
        assert!(matches!(CivilDate::parse("2025-02-29"), Err(DateError::BadDay { max: 28, .. })));
        assert_eq!(CivilDate::parse("10-03"), Err(DateError::Syntax { yearly: false }));
        assert_eq!(HolidayDate::parse("02-29"), Ok(HolidayDate::Yearly { month: 2, day: 29 }));
        assert_eq!(HolidayDate::parse("2025/10/03"), Err(DateError::Syntax { yearly: true }));
        assert_eq!(TimeRange::parse("08:00-19:00"), Ok(TimeRange { start: 480, end: 1140 }));
        assert_eq!(TimeRange::parse("9:30 - 24:00"), Ok(TimeRange { start: 570, end: 1440 }));
        assert_eq!(TimeRange::parse("22:00-00:00"), Ok(TimeRange { start: 1320, end: 1440 }));
        assert_eq!(TimeRange::parse("22:00-06:00"), Ok(TimeRange { start: 1320, end: 360 }));
        assert_eq!(TimeRange::parse("25:00-26:00"), Err(TimeRangeError::BadTime { text: "25:00".into() }));
        assert_eq!(TimeRange::parse("24:00-06:00"), Err(TimeRangeError::BadTime { text: "24:00".into() }));
        assert_eq!(TimeRange::parse("08:60-09:00"), Err(TimeRangeError::BadTime { text: "08:60".into() }));
        assert_eq!(TimeRange::parse("08:00"), Err(TimeRangeError::Syntax));
        assert_eq!(TimeRange::parse("08:00-08:00"), Err(TimeRangeError::Empty));
        assert_eq!(parse_utc_offset("+09:00"), Some(540));
        assert_eq!(parse_utc_offset("-03:30"), Some(-210));
        assert_eq!(parse_utc_offset("+0545"), Some(345));
        assert_eq!(parse_utc_offset("Z"), Some(0));
        assert_eq!(parse_utc_offset("+15:00"), None);
        assert_eq!(parse_utc_offset("09:00"), None);
        assert_eq!(format_utc_offset(-210), "-03:30");
        assert_eq!(format_utc_offset(540), "+09:00");
    }

    #[test]
    fn always_open_never_changes() {
        let s = ScheduleCfg::always_open("x");
        assert!(s.is_open(0, 540));
        assert_eq!(s.next_change(0, 540), None);
        assert_eq!(ScheduleCfg::default().next_change(0, 540), None);
        assert!(!ScheduleCfg::default().is_open(0, 540));
    }
}
