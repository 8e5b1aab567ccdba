//! The names `[locale]` is checked against, as Raspberry Pi OS ships them (see
//! `[customize]` in `builder/src/upstream.toml` for where each list comes from).

/// tz database names with a zone file in `/usr/share/zoneinfo` on both releases.
const TIMEZONES: &str = include_str!("timezones.txt");
/// First column of glibc's `/usr/share/i18n/SUPPORTED`.
const LOCALES: &str = include_str!("locales.txt");
/// The layouts of xkeyboard-config's `rules/base.lst`.
const KEYBOARDS: &str = include_str!("keyboards.txt");

/// Every time zone name.
pub fn timezones() -> impl Iterator<Item = &'static str> + Clone {
    TIMEZONES.lines()
}

/// Every supported locale name.
pub fn locales() -> impl Iterator<Item = &'static str> + Clone {
    LOCALES.lines()
}

/// Every XKB layout code.
pub fn keyboards() -> impl Iterator<Item = &'static str> + Clone {
    KEYBOARDS.lines()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_hold_the_usual_names_and_no_blank_lines() {
        for (list, must) in [
            (
                timezones().collect::<Vec<_>>(),
                ["Europe/Berlin", "UTC", "America/New_York"],
            ),
            (
                locales().collect(),
                ["en_GB.UTF-8", "de_DE.UTF-8", "C.UTF-8"],
            ),
            (keyboards().collect(), ["gb", "us", "de"]),
        ] {
            assert!(list.len() > 50);
            assert!(list.iter().all(|n| !n.trim().is_empty() && n.trim() == *n));
            for m in must {
                assert!(list.contains(&m), "{m}");
            }
        }
    }
}
