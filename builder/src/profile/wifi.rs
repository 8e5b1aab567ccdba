//! `[wifi]`: SSID, WPA pre-shared key and regulatory domain, checked; the PSK a card
//! gets is always the 64-hex key, never the passphrase.
//!
//! The key is derived as wpa_supplicant's `wpa_passphrase` and Raspberry Pi Imager do
//! (IEEE 802.11i annex H.4): PBKDF2-HMAC-SHA1 of the passphrase, salted with the
//! SSID, with the iterations and length of `upstream.toml`'s `[wifi]`.

use std::num::NonZeroU32;

/// ISO 3166-1 alpha-2 codes, as raspi-config's `do_wifi_country` accepts them
/// (it checks /usr/share/zoneinfo/iso3166.tab; this is that table's first column).
pub const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// What is wrong with one `[wifi]` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WifiError {
    /// SSID empty or over 32 bytes.
    #[error("SSID of {0} bytes; an SSID has 1 to 32 bytes")]
    SsidLength(usize),
    /// An SSID NetworkManager's keyfile cannot carry as written.
    #[error(
        "SSID {0:?} has a control character, a backslash or leading/trailing spaces, which the NetworkManager keyfile would not keep as they are; piimg supports SSIDs without them"
    )]
    SsidChars(String),
    /// Neither a passphrase nor a 64-hex PSK.
    #[error(
        "neither a WPA passphrase (8 to 63 printable ASCII characters) nor a 64-digit hex PSK ({0}); e.g. psk = \"correct horse battery\", or the psk= line of `wpa_passphrase SSID`"
    )]
    Psk(String),
    /// Not an ISO 3166 alpha-2 code.
    #[error(
        "\"{0}\" is not an ISO 3166 alpha-2 country code (two capital letters, e.g. \"GB\", \"US\", \"DE\"): the radio may only transmit under its country's rules"
    )]
    Country(String),
}

/// Checks an SSID's length (1 to 32 bytes, IEEE 802.11).
pub fn check_ssid(ssid: &str) -> Result<(), WifiError> {
    if !(1..=32).contains(&ssid.len()) {
        return Err(WifiError::SsidLength(ssid.len()));
    }
    if ssid.chars().any(|c| c.is_control() || c == '\\') || ssid.trim() != ssid {
        return Err(WifiError::SsidChars(ssid.to_string()));
    }
    Ok(())
}

/// Checks a regulatory domain: an ISO 3166 alpha-2 code in capitals.
pub fn check_country(country: &str) -> Result<(), WifiError> {
    let ok = country.len() == 2
        && country.bytes().all(|b| b.is_ascii_uppercase())
        && COUNTRIES.split(' ').any(|c| c == country);
    if ok {
        Ok(())
    } else {
        Err(WifiError::Country(country.to_string()))
    }
}

/// True for 64 hex digits: a PSK given as the key itself.
fn is_hex_psk(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The 64-hex PSK for `ssid` from `psk` (a passphrase, or already the hex key,
/// returned lowercase).
pub fn psk_hex(ssid: &str, psk: &str) -> Result<String, WifiError> {
    if is_hex_psk(psk) {
        return Ok(psk.to_ascii_lowercase());
    }
    let printable = psk.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if !(8..=63).contains(&psk.len()) || !printable {
        let why = if !printable {
            "it has a character outside printable ASCII".to_string()
        } else {
            format!("it has {} characters", psk.len())
        };
        return Err(WifiError::Psk(why));
    }
    let facts = &crate::upstream::facts().wifi;
    let mut key = vec![0u8; facts.psk_bytes];
    let iterations = NonZeroU32::new(facts.psk_pbkdf2_iterations).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA1,
        iterations,
        ssid.as_bytes(),
        psk.as_bytes(),
        &mut key,
    );
    Ok(hex::encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_gives_the_ieee_test_vector() {
        // IEEE 802.11i-2004 annex H.4.3, test vector 1.
        assert_eq!(
            psk_hex("IEEE", "password").unwrap(),
            "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
        );
    }

    #[test]
    fn hex_psk_is_kept_and_bad_ones_refused() {
        let hex = "F42C6FC52DF0EBEF9EBB4B90B38A5F902E83FE1B135A70E23AED762E9710A12E";
        assert_eq!(psk_hex("x", hex).unwrap(), hex.to_ascii_lowercase());
        assert!(psk_hex("x", "short").is_err());
        assert!(psk_hex("x", &"a".repeat(64)).is_ok());
        assert!(psk_hex("x", &"g".repeat(64)).is_err());
        assert!(psk_hex("x", "pass\u{e9}word1").is_err());
    }

    #[test]
    fn ssids_the_keyfile_cannot_keep_are_refused() {
        assert!(check_ssid("lab net").is_ok());
        assert!(check_ssid(&"x".repeat(32)).is_ok());
        assert!(check_ssid(&"x".repeat(33)).is_err());
        for bad in [" lead", "trail ", "tab\there", "back\\slash"] {
            assert!(
                matches!(check_ssid(bad), Err(WifiError::SsidChars(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn countries_are_iso_codes_in_capitals() {
        assert!(check_country("GB").is_ok());
        assert!(check_country("gb").is_err());
        assert!(check_country("UK").is_err());
        assert!(check_country("GBR").is_err());
        assert_eq!(COUNTRIES.split(' ').count(), 249);
    }
}
