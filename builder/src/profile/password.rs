//! `access.password_hash`: a crypt(3) hash whose shape is checked (scheme, salt and
//! hash alphabet and length), so a plain password or an unknown scheme never reaches
//! /etc/shadow.
//!
//! Accepted: yescrypt `$y$PARAMS$SALT$HASH` (libxcrypt's default, what `mkpasswd -m
//! yescrypt` and Raspberry Pi OS's userconf write) and sha512-crypt
//! `$6$[rounds=N$]SALT$HASH` (`openssl passwd -6`).

/// crypt(3)'s base-64 alphabet.
fn is_crypt64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// How to make an accepted hash.
pub const HINT: &str =
    "make one with `mkpasswd -m yescrypt` (package whois) or `openssl passwd -6`";

/// Why `hash` is not an accepted password hash, if it is not.
pub fn problem(hash: &str) -> Option<String> {
    let parts: Vec<&str> = hash.split('$').collect();
    let bad = |what: &str| Some(format!("{what}; {HINT}"));
    if !hash.starts_with('$') {
        return bad("not a crypt(3) hash (a plain password is never accepted)");
    }
    match parts.get(1).copied() {
        Some("y") => {
            // ["", "y", params, salt, hash]
            if parts.len() != 5 {
                return bad("a yescrypt hash has the shape $y$PARAMS$SALT$HASH");
            }
            let (params, salt, h) = (parts[2], parts[3], parts[4]);
            if params.is_empty() || !is_crypt64(params) {
                bad("yescrypt parameters are not crypt base-64")
            } else if salt.is_empty() || salt.len() > 86 || !is_crypt64(salt) {
                bad("yescrypt salt is empty, too long or not crypt base-64")
            } else if h.len() != 43 || !is_crypt64(h) {
                bad("a yescrypt hash part has 43 crypt base-64 characters")
            } else {
                None
            }
        }
        Some("6") => {
            // ["", "6", [rounds=N,] salt, hash]
            let rest = &parts[2..];
            let rest = match rest.first() {
                Some(r) if r.starts_with("rounds=") => {
                    let n = r["rounds=".len()..].parse::<u32>();
                    if n.is_err() {
                        return bad("sha512-crypt rounds= is not a number");
                    }
                    &rest[1..]
                }
                _ => rest,
            };
            if rest.len() != 2 {
                return bad("a sha512-crypt hash has the shape $6$[rounds=N$]SALT$HASH");
            }
            let (salt, h) = (rest[0], rest[1]);
            if salt.is_empty() || salt.len() > 16 || !is_crypt64(salt) {
                bad("sha512-crypt salt has 1 to 16 crypt base-64 characters")
            } else if h.len() != 86 || !is_crypt64(h) {
                bad("a sha512-crypt hash part has 86 crypt base-64 characters")
            } else {
                None
            }
        }
        Some(other) => bad(&format!(
            "scheme ${other}$ is not accepted (only yescrypt $y$ and sha512-crypt $6$)"
        )),
        None => bad("not a crypt(3) hash"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `openssl passwd -6 -salt saltsalt secret` and libxcrypt's yescrypt
    // (Python's crypt.crypt with a `$y$j9T$…$` setting).
    const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    const YESCRYPT: &str =
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$GmcwIgvdUC9qLWcKCi6gklUa1dM3ziD43YxYNURLKy0";

    #[test]
    fn accepts_yescrypt_and_sha512_crypt() {
        assert_eq!(problem(SHA512), None);
        assert_eq!(problem(YESCRYPT), None);
        assert_eq!(
            problem(
                "$6$rounds=5000$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/"
            ),
            None
        );
    }

    #[test]
    fn refuses_plain_text_other_schemes_and_broken_shapes() {
        for bad in [
            "hunter2",
            "$1$salt$hash",
            "$5$saltsalt$abc",
            "$6$saltsalt$short",
            "$6$salt:bad$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
            "$y$j9T$salt$tooshort",
            "$y$j9T$$GmcwIgvdUC9qLWcKCi6gklUa1dM3ziD43YxYNURLKy0",
            "",
        ] {
            let p = problem(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(p.contains("mkpasswd -m yescrypt"), "{p}");
        }
    }
}
