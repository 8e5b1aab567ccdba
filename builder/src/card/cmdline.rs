//! cmdline.txt: keep every argument the OS put there, append ours exactly once.

/// What a card does to cmdline.txt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdlineEdit {
    /// Arguments appended unless already present (in this order).
    pub append: Vec<String>,
    /// Arguments starting with one of these prefixes are removed first (earlier
    /// builds' hooks, another tool's `ds=nocloud;i=` instance id), so rebuilding from
    /// an already built image replaces them instead of adding a second copy.
    pub replace_prefixes: Vec<String>,
}

/// Why cmdline.txt cannot be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// No arguments at all: not a Raspberry Pi OS boot partition, or a damaged one.
    #[error("cmdline.txt is empty; is this a Raspberry Pi OS boot partition?")]
    Empty,
    /// Not UTF-8 text.
    #[error("cmdline.txt is not text (invalid UTF-8 at byte {0})")]
    NotText(usize),
    /// More than one non-empty line: the firmware reads only the first.
    #[error(
        "cmdline.txt has {0} non-empty lines; the firmware reads only the first, so it must be one line"
    )]
    MultiLine(usize),
    /// `root=` is missing: the image would not boot.
    #[error("cmdline.txt has no root= argument; the base image looks damaged")]
    NoRoot,
}

impl CmdlineEdit {
    /// Applies the edit to `current` (cmdline.txt as read); returns the new file (one
    /// line, single spaces, trailing newline). Idempotent: applying it to its own
    /// output changes nothing.
    pub fn apply(&self, current: &[u8]) -> Result<String, CmdlineError> {
        let text =
            std::str::from_utf8(current).map_err(|e| CmdlineError::NotText(e.valid_up_to()))?;
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        if lines > 1 {
            return Err(CmdlineError::MultiLine(lines));
        }
        let mut args: Vec<&str> = text
            .split_whitespace()
            .filter(|a| {
                !self
                    .replace_prefixes
                    .iter()
                    .any(|p| a.starts_with(p.as_str()))
            })
            .collect();
        if args.is_empty() {
            return Err(CmdlineError::Empty);
        }
        if !args.iter().any(|a| a.starts_with("root=")) {
            return Err(CmdlineError::NoRoot);
        }
        for a in &self.append {
            if !args.contains(&a.as_str()) {
                args.push(a);
            }
        }
        Ok(args.join(" ") + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKWORM: &str = "console=serial0,115200 console=tty1 root=PARTUUID=0ddba11e-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

    fn edit() -> CmdlineEdit {
        CmdlineEdit {
            append: vec![
                "cgroup_memory=1".into(),
                "cgroup_enable=memory".into(),
                "ds=nocloud;i=piimg-a".into(),
            ],
            replace_prefixes: vec!["ds=nocloud".into()],
        }
    }

    #[test]
    fn appends_once_and_keeps_everything() {
        let once = edit().apply(BOOKWORM.as_bytes()).unwrap();
        assert_eq!(
            once,
            BOOKWORM.trim_end().to_string()
                + " cgroup_memory=1 cgroup_enable=memory ds=nocloud;i=piimg-a\n"
        );
        let twice = edit().apply(once.as_bytes()).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn flags_already_present_are_not_repeated() {
        let base = "root=PARTUUID=1-02 cgroup_enable=memory rootwait cgroup_memory=1\r\n";
        let out = edit().apply(base.as_bytes()).unwrap();
        assert_eq!(
            out,
            "root=PARTUUID=1-02 cgroup_enable=memory rootwait cgroup_memory=1 ds=nocloud;i=piimg-a\n"
        );
    }

    #[test]
    fn a_previous_instance_id_is_replaced() {
        let base = "root=PARTUUID=1-02 ds=nocloud;i=rpi-imager-1234 quiet\n";
        let out = edit().apply(base.as_bytes()).unwrap();
        assert_eq!(out.matches("ds=nocloud").count(), 1);
        assert!(out.contains("ds=nocloud;i=piimg-a"));
        assert!(!out.contains("rpi-imager"));
    }

    #[test]
    fn bad_cmdlines_are_refused_with_a_reason() {
        assert_eq!(edit().apply(b"  \n"), Err(CmdlineError::Empty));
        assert_eq!(edit().apply(b"quiet\n"), Err(CmdlineError::NoRoot));
        assert_eq!(
            edit().apply(b"root=x\nquiet\n"),
            Err(CmdlineError::MultiLine(2))
        );
        assert_eq!(edit().apply(b"root=x \xff"), Err(CmdlineError::NotText(7)));
        assert!(
            CmdlineError::MultiLine(2)
                .to_string()
                .contains("must be one line")
        );
    }
}
