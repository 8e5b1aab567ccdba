//! Dates: the card contract's RFC 3339 formatter ([`piimg_contract::rfc3339`]), now,
//! and the calendar arithmetic FAT timestamps share.

pub use piimg_contract::rfc3339::{civil_from_days, rfc3339_utc};

/// Now as RFC 3339 UTC, to the second.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    rfc3339_utc(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_parses_as_rfc3339() {
        let now = rfc3339_now();
        let parsed =
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok(), "{now}");
    }
}
