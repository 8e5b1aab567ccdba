//! config.txt: per hardware class lines placed under the right `[section]` filter,
//! never duplicated, replaced (not repeated) when a built image is rebuilt.

/// Marks the start of the lines piimg added to a section.
pub const BEGIN: &str = "# piimg: begin";
/// Marks the end of the lines piimg added to a section.
pub const END: &str = "# piimg: end";

/// Lines to place under config.txt section filters, e.g. `[pi5]` → `kernel=kernel8.img`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigEdit {
    /// (section name without brackets, lines), in order.
    pub sections: Vec<(String, Vec<String>)>,
}

/// Why a rendered config.txt snippet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigTxtError {
    /// A line appeared before any `[section]` header in the snippet.
    #[error(
        "config.txt snippet line {line}: {text:?} is not under a [section]; start the snippet with e.g. [all]"
    )]
    NoSection {
        /// 1-based line in the rendered snippet.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// config.txt is not UTF-8.
    #[error("config.txt is not text (invalid UTF-8 at byte {0})")]
    NotText(usize),
}

impl ConfigEdit {
    /// Parses a rendered snippet (`[section]` headers followed by lines; blank lines
    /// and `#` comments ignored).
    pub fn parse(snippet: &str) -> Result<Self, ConfigTxtError> {
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for (i, raw) in snippet.lines().enumerate() {
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(name) = section_name(l) {
                match sections.iter().position(|(n, _)| n == name) {
                    Some(pos) => {
                        let s = sections.remove(pos);
                        sections.push(s);
                    }
                    None => sections.push((name.to_string(), Vec::new())),
                }
                continue;
            }
            let Some((_, lines)) = sections.last_mut() else {
                return Err(ConfigTxtError::NoSection {
                    line: i + 1,
                    text: l.to_string(),
                });
            };
            if !lines.iter().any(|x| x == l) {
                lines.push(l.to_string());
            }
        }
        sections.retain(|(_, lines)| !lines.is_empty());
        Ok(Self { sections })
    }

    /// Applies the edit to config.txt as read: earlier piimg blocks are removed, then
    /// each section's lines that the file does not already have in that section go
    /// into a marked block at the end of the section's last occurrence (a new section
    /// at the end of the file if there is none). Idempotent.
    pub fn apply(&self, current: &[u8]) -> Result<String, ConfigTxtError> {
        let text =
            std::str::from_utf8(current).map_err(|e| ConfigTxtError::NotText(e.valid_up_to()))?;
        let mut lines: Vec<String> = Vec::new();
        let mut in_block = false;
        for l in text.lines() {
            match l.trim() {
                BEGIN => in_block = true,
                END => in_block = false,
                _ if in_block => {}
                _ => lines.push(l.trim_end_matches('\r').to_string()),
            }
        }
        for (name, wanted) in &self.sections {
            let ranges = section_ranges(&lines, name);
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|w| {
                    !ranges
                        .iter()
                        .any(|&(s, e)| lines[s..e].iter().any(|l| l.trim() == w.as_str()))
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            let mut block = vec![BEGIN.to_string()];
            block.extend(missing.into_iter().cloned());
            block.push(END.to_string());
            match ranges.last() {
                Some(&(start, end)) => {
                    // After the section's last non-blank line.
                    let mut at = end;
                    while at > start && lines[at - 1].trim().is_empty() {
                        at -= 1;
                    }
                    lines.splice(at..at, block);
                }
                None => {
                    while lines.last().is_some_and(|l| l.trim().is_empty()) {
                        lines.pop();
                    }
                    if !lines.is_empty() {
                        lines.push(String::new());
                    }
                    lines.push(format!("[{name}]"));
                    lines.extend(block);
                }
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        Ok(out)
    }
}

fn section_name(line: &str) -> Option<&str> {
    line.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

/// Line ranges `[start, end)` of the bodies of every `[name]` section (the lines
/// after the header up to the next header). Lines before any header count as
/// `[all]`.
fn section_ranges(lines: &[String], name: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current = Some("all".to_string());
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        if let Some(n) = section_name(l.trim()) {
            if current.as_deref() == Some(name) {
                out.push((start, i));
            }
            current = Some(n.to_string());
            start = i + 1;
        }
    }
    if current.as_deref() == Some(name) {
        out.push((start, lines.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "dtparam=audio=on\ncamera_auto_detect=1\narm_64bit=1\n\n[cm4]\notg_mode=1\n\n[pi5]\ndtoverlay=dwc2,dr_mode=host\n\n[all]\nenable_uart=0\n";

    fn edit() -> ConfigEdit {
        ConfigEdit::parse(
            "[pi5]\nkernel=kernel8.img\n\n[all]\ndtoverlay=disable-wifi\ndtoverlay=disable-bt\n",
        )
        .unwrap()
    }

    #[test]
    fn lines_land_in_their_section_once() {
        let once = edit().apply(BASE.as_bytes()).unwrap();
        assert_eq!(
            once,
            "dtparam=audio=on\ncamera_auto_detect=1\narm_64bit=1\n\n[cm4]\notg_mode=1\n\n[pi5]\ndtoverlay=dwc2,dr_mode=host\n# piimg: begin\nkernel=kernel8.img\n# piimg: end\n\n[all]\nenable_uart=0\n# piimg: begin\ndtoverlay=disable-wifi\ndtoverlay=disable-bt\n# piimg: end\n"
        );
        assert_eq!(edit().apply(once.as_bytes()).unwrap(), once);
    }

    #[test]
    fn a_changed_profile_replaces_the_old_block() {
        let once = edit().apply(BASE.as_bytes()).unwrap();
        let other = ConfigEdit::parse("[all]\ndtoverlay=disable-bt\n").unwrap();
        let out = other.apply(once.as_bytes()).unwrap();
        assert!(!out.contains("kernel=kernel8.img"), "{out}");
        assert!(!out.contains("disable-wifi"), "{out}");
        assert_eq!(out.matches("dtoverlay=disable-bt").count(), 1);
    }

    #[test]
    fn lines_the_base_already_has_are_not_added() {
        let base = "[pi5]\nkernel=kernel8.img\n[all]\ndtoverlay=disable-wifi\n";
        let out = edit().apply(base.as_bytes()).unwrap();
        assert_eq!(out.matches("kernel=kernel8.img").count(), 1);
        assert_eq!(out.matches("disable-wifi").count(), 1);
        assert_eq!(out.matches("disable-bt").count(), 1);
    }

    #[test]
    fn missing_sections_are_added_at_the_end() {
        // Lines before any filter apply to all boards: [all] lines may go there.
        let out = edit().apply(b"arm_64bit=1\n").unwrap();
        assert_eq!(
            out,
            "arm_64bit=1\n# piimg: begin\ndtoverlay=disable-wifi\ndtoverlay=disable-bt\n# piimg: end\n\n[pi5]\n# piimg: begin\nkernel=kernel8.img\n# piimg: end\n"
        );
    }

    #[test]
    fn snippet_line_outside_a_section_is_refused() {
        let err = ConfigEdit::parse("kernel=kernel8.img\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("[all]"), "{err}");
    }

    #[test]
    fn empty_snippet_changes_nothing() {
        let e = ConfigEdit::parse("\n\n").unwrap();
        assert!(e.sections.is_empty());
        assert_eq!(e.apply(BASE.as_bytes()).unwrap(), BASE);
    }
}
