//! Reading a profile file: TOML → [`Profile`], with errors that point at
//! `file:line:col` and suggest the nearest valid key for a misspelt one.

use super::ProfileError;
use super::model::Profile;
use super::suggest;
use std::path::Path;

/// Reads and parses the profile at `path` (no validation; see [`super::validate()`]).
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut profile = parse(&text, path)?;
    profile.path = path.to_path_buf();
    Ok(profile)
}

/// Parses profile `text`; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
    toml::from_str::<Profile>(text).map_err(|err| {
        let (line, col) = err
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((1, 1));
        ProfileError::Parse {
            path: path.to_path_buf(),
            line,
            col,
            message: explain(err.message()),
        }
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Turns serde's "unknown field/variant" messages into one naming the nearest valid choice.
fn explain(message: &str) -> String {
    let message = message.trim_end();
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((word, tail)) = rest.split_once('`') else {
            continue;
        };
        let valid = backticked(tail);
        if valid.is_empty() {
            return format!("unknown {what} `{word}`: nothing is allowed here");
        }
        let list = valid.join(", ");
        return match suggest::nearest(word, valid.iter().copied()) {
            Some(near) => {
                format!("unknown {what} `{word}`, did you mean `{near}`? (valid: {list})")
            }
            None => format!("unknown {what} `{word}` (valid: {list})"),
        };
    }
    message.to_string()
}

/// The `quoted` words of a serde "expected one of `a`, `b`" tail.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn explains_unknown_fields_and_variants() {
        assert_eq!(
            explain("unknown field `nmae`, expected one of `name`, `ip`"),
            "unknown key `nmae`, did you mean `name`? (valid: name, ip)"
        );
        assert_eq!(
            explain("unknown variant `sever`, expected `server` or `agent`"),
            "unknown value `sever`, did you mean `server`? (valid: server, agent)"
        );
        assert_eq!(
            explain("unknown field `zzzzzz`, expected `name`"),
            "unknown key `zzzzzz` (valid: name)"
        );
        assert_eq!(explain("missing field `ip`"), "missing field `ip`");
    }
}
