//! Local days and report intervals from Unix milliseconds and a UTC offset in minutes.
//!
//! Statistics are bucketed in 15-minute slots of local time: slot `s = floor((unix_ms + offset) / 15 min)`.
//! Every UTC offset in use is a multiple of 15 minutes, so 15/30/60-minute intervals and local midnight
//! all fall on slot boundaries; a local day is 96 slots (no daylight saving time in Korea; a tenant in a
//! DST zone gets fixed-offset days).

use std::fmt;

pub const SLOT_MS: i64 = 15 * 60 * 1000;
pub const SLOTS_PER_DAY: i64 = 96;
pub const DAY_MS: i64 = 86_400_000;

/// The local 15-minute slot of a time.
pub fn slot(unix_ms: i64, offset_min: i32) -> i64 {
    (unix_ms + offset_min as i64 * 60_000).div_euclid(SLOT_MS)
}

/// The Unix ms at which a slot starts.
pub fn slot_start_ms(slot: i64, offset_min: i32) -> i64 {
    slot * SLOT_MS - offset_min as i64 * 60_000
}

/// A calendar date (proleptic Gregorian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Days since 1970-01-01 (H. Hinnant's days_from_civil).
    pub fn days(self) -> i64 {
        let y = self.year as i64 - if self.month <= 2 { 1 } else { 0 };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = self.month as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + self.day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + if month <= 2 { 1 } else { 0 }) as i32;
        Date { year, month, day }
    }

    /// The local date of a time.
    pub fn of(unix_ms: i64, offset_min: i32) -> Date {
        Date::from_days((unix_ms + offset_min as i64 * 60_000).div_euclid(DAY_MS))
    }

    /// Local midnight starting this date, in Unix ms.
    pub fn start_ms(self, offset_min: i32) -> i64 {
        self.days() * DAY_MS - offset_min as i64 * 60_000
    }

    /// The first 15-minute slot of this date.
    pub fn first_slot(self) -> i64 {
        self.days() * SLOTS_PER_DAY
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.splitn(3, '-');
        let year = it.next()?.parse().ok()?;
        let month: u32 = it.next()?.parse().ok()?;
        let day: u32 = it.next()?.parse().ok()?;
        let d = Date { year, month, day };
        (Date::from_days(d.days()) == d).then_some(d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// `YYYY-MM-DDTHH:MM+HH:MM`: the local start of a slot with its offset (RFC 3339 without seconds).
pub fn local_stamp(slot: i64, offset_min: i32) -> String {
    let date = Date::from_days(slot.div_euclid(SLOTS_PER_DAY));
    let min = slot.rem_euclid(SLOTS_PER_DAY) * 15;
    let sign = if offset_min < 0 { '-' } else { '+' };
    let off = offset_min.unsigned_abs();
    format!("{date}T{:02}:{:02}{sign}{:02}:{:02}", min / 60, min % 60, off / 60, off % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_known_days() {
        assert_eq!(Date { year: 1970, month: 1, day: 1 }.days(), 0);
        assert_eq!(Date { year: 2000, month: 3, day: 1 }.days(), 11_017);
        for d in [-800_000i64, -1, 0, 59, 10_957, 19_782, 2_932_896] {
            assert_eq!(Date::from_days(d).days(), d);
        }
        assert_eq!(Date::parse("2024-02-29").map(|d| d.to_string()).as_deref(), Some("2024-02-29"));
        assert_eq!(Date::parse("2023-02-29"), None);
    }

    #[test]
    fn kst_midnight_and_slots() {
        // 2024-05-01T00:00+09:00 = 2024-04-30T15:00Z = 1714489200000.
        let d = Date::parse("2024-05-01").unwrap();
        assert_eq!(d.start_ms(540), 1_714_489_200_000);
        assert_eq!(Date::of(1_714_489_200_000 - 1, 540).to_string(), "2024-04-30");
        assert_eq!(slot(1_714_489_200_000, 540), d.first_slot());
        assert_eq!(local_stamp(d.first_slot() + 37, 540), "2024-05-01T09:15+09:00");
        assert_eq!(slot_start_ms(d.first_slot(), 540), 1_714_489_200_000);
    }
}
