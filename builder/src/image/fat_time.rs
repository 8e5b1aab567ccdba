//! The one fixed timestamp every file piimg writes to a FAT partition carries, so a
//! build is reproducible from `SOURCE_DATE_EPOCH`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use fatfs::{Date, DateTime, Time, TimeProvider};

/// A point in time for FAT directory entries (UTC, 2-second resolution, 1980..=2107).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    unix: i64,
}

/// DOS dates cover 1980-01-01 00:00:00 ..= 2107-12-31 23:59:58 (UTC here).
const DOS_MIN: i64 = 315_532_800;
const DOS_MAX: i64 = 4_354_819_198;

impl Timestamp {
    /// From seconds since the Unix epoch (as in `SOURCE_DATE_EPOCH`); clamped to the
    /// range a FAT directory entry can hold.
    pub fn from_unix(secs: i64) -> Self {
        Self {
            unix: secs.clamp(DOS_MIN, DOS_MAX),
        }
    }

    /// The earliest FAT time, 1980-01-01 00:00:00: the default when none is given.
    pub fn dos_epoch() -> Self {
        Self { unix: DOS_MIN }
    }

    /// Seconds since the Unix epoch (after clamping).
    pub fn unix(&self) -> i64 {
        self.unix
    }

    /// The FAT date/time fields.
    pub fn to_fat(self) -> DateTime {
        let days = self.unix.div_euclid(86_400);
        let secs = self.unix.rem_euclid(86_400);
        let (year, month, day) = crate::date::civil_from_days(days);
        DateTime {
            date: Date {
                year: year as u16,
                month: month as u16,
                day: day as u16,
            },
            time: Time {
                hour: (secs / 3600) as u16,
                min: (secs / 60 % 60) as u16,
                sec: (secs % 60) as u16,
                millis: 0,
            },
        }
    }

    /// Raw `(time, date)` words of a directory entry (2-second resolution).
    pub fn dos_words(self) -> (u16, u16) {
        let dt = self.to_fat();
        let time = (dt.time.hour << 11) | (dt.time.min << 5) | (dt.time.sec / 2);
        let date = ((dt.date.year - 1980) << 9) | (dt.date.month << 5) | dt.date.day;
        (time, date)
    }

    /// A `'static` fatfs time provider for this timestamp (one per distinct value,
    /// kept for the life of the process because fatfs wants `&'static`).
    pub(crate) fn provider(self) -> &'static FixedTime {
        static PROVIDERS: OnceLock<Mutex<HashMap<Timestamp, &'static FixedTime>>> = OnceLock::new();
        let map = PROVIDERS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = match map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(self)
            .or_insert_with(|| Box::leak(Box::new(FixedTime(self.to_fat()))))
    }
}

/// A fatfs [`TimeProvider`] that always answers the same time.
#[derive(Debug)]
pub struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }

    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // 2023-11-14 22:13:20 UTC
        let dt = Timestamp::from_unix(1_700_000_000).to_fat();
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2023, 11, 14));
        assert_eq!((dt.time.hour, dt.time.min, dt.time.sec), (22, 13, 20));
        // 2024-02-29 00:00:00 UTC (leap day)
        let dt = Timestamp::from_unix(1_709_164_800).to_fat();
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2024, 2, 29));
    }

    #[test]
    fn clamped_to_dos_range() {
        let dt = Timestamp::from_unix(0).to_fat();
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (1980, 1, 1));
        assert_eq!(Timestamp::from_unix(i64::MAX).to_fat().date.year, 2107);
    }

    #[test]
    fn providers_are_shared_per_value() {
        let a = Timestamp::from_unix(1_700_000_000).provider() as *const FixedTime;
        let b = Timestamp::from_unix(1_700_000_000).provider() as *const FixedTime;
        assert_eq!(a, b);
    }
}
