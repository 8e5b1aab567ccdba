//! An error and its causes as one line, each cause once.

use std::error::Error;

/// `error: cause: cause…`, adding a cause after `: ` unless the level above already
/// ends with it, as error types that put `{source}` in their own message (and also
/// return it from `source()`) do — so an OS error is never printed twice.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut above = out.clone();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !above.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        above = text;
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading base.img: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("reading base.img")]
    struct Names(#[source] std::io::Error);

    fn not_found() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn each_cause_once_whichever_style_the_type_uses() {
        let os = not_found().to_string();
        assert_eq!(
            chain(&Repeats(not_found())),
            format!("reading base.img: {os}")
        );
        assert_eq!(
            chain(&Names(not_found())),
            format!("reading base.img: {os}")
        );
    }
}
