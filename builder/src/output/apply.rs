//! Laying a [`Card`] onto a boot partition: the edited cmdline.txt and config.txt,
//! the card's files, the manifest; stale piimg files from an earlier build removed.

use crate::card::{CARD_DIR_PREFIX, CMDLINE_TXT, CONFIG_TXT, Card, CardError};
use std::collections::BTreeMap;

/// The operations the card needs from a boot partition (FAT, written in place).
pub trait BootPartition {
    /// Error type of the partition.
    type Error: std::error::Error + Send + Sync + 'static;
    /// A file's bytes, or `None` if it does not exist.
    fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Every file below `dir` (recursive), as paths relative to the partition root.
    fn list_files(&mut self, dir: &str) -> Result<Vec<String>, Self::Error>;
    /// Applies all writes and removals as one batch (space checked first).
    fn apply_changes(
        &mut self,
        writes: &BTreeMap<String, Vec<u8>>,
        removes: &[String],
    ) -> Result<(), Self::Error>;
}

/// Files to write (path → bytes) and files to remove, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Path → new content.
    pub writes: BTreeMap<String, Vec<u8>>,
    /// Paths to delete.
    pub removes: Vec<String>,
}

/// Why a card could not be laid onto a boot partition.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The boot partition lacks a file every Raspberry Pi OS image has.
    #[error("boot partition has no {0}; is the base a Raspberry Pi OS image?")]
    Missing(&'static str),
    /// cmdline.txt cannot be edited.
    #[error(transparent)]
    Cmdline(#[from] crate::card::CmdlineError),
    /// config.txt cannot be edited.
    #[error(transparent)]
    ConfigTxt(#[from] crate::card::ConfigTxtError),
    /// A card file could not be read.
    #[error(transparent)]
    Card(#[from] CardError),
    /// The partition refused a read or write.
    #[error("boot partition: {0}")]
    Partition(Box<dyn std::error::Error + Send + Sync>),
}

/// The complete set of writes and removals for `card` given the partition's current
/// state, plus `extra` files (the manifest). Pure apart from reading.
pub fn plan_changes<B: BootPartition>(
    boot: &mut B,
    card: &Card,
    extra: &BTreeMap<String, Vec<u8>>,
) -> Result<Changes, ApplyError> {
    let part = |e: B::Error| ApplyError::Partition(Box::new(e));
    let cmdline = boot
        .read_file(CMDLINE_TXT)
        .map_err(part)?
        .ok_or(ApplyError::Missing(CMDLINE_TXT))?;
    let config = boot
        .read_file(CONFIG_TXT)
        .map_err(part)?
        .ok_or(ApplyError::Missing(CONFIG_TXT))?;
    let mut writes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    writes.insert(
        CMDLINE_TXT.into(),
        card.cmdline.apply(&cmdline)?.into_bytes(),
    );
    writes.insert(
        CONFIG_TXT.into(),
        card.config_txt.apply(&config)?.into_bytes(),
    );
    for (path, content) in &card.files {
        writes.insert(path.clone(), content.bytes()?.into_owned());
    }
    for (path, bytes) in extra {
        writes.insert(path.clone(), bytes.clone());
    }
    // Whatever an earlier build (or the agent) left under piimg/ and this card does
    // not write goes: a status.json, airgap files no longer bundled.
    let dir = CARD_DIR_PREFIX.trim_end_matches('/');
    let mut removes: Vec<String> = boot
        .list_files(dir)
        .map_err(part)?
        .into_iter()
        .filter(|p| !writes.keys().any(|w| w.eq_ignore_ascii_case(p)))
        .collect();
    removes.sort();
    Ok(Changes { writes, removes })
}

/// Lays `card` (and `extra` files) onto `boot` in one batch.
pub fn apply_card<B: BootPartition>(
    boot: &mut B,
    card: &Card,
    extra: &BTreeMap<String, Vec<u8>>,
) -> Result<(), ApplyError> {
    let c = plan_changes(boot, card, extra)?;
    boot.apply_changes(&c.writes, &c.removes)
        .map_err(|e| ApplyError::Partition(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{FirstBoot, NodeHa, NodeSecrets, Os, RenderOptions, Templates, render};

    #[derive(Default)]
    struct Mem(BTreeMap<String, Vec<u8>>);

    impl BootPartition for Mem {
        type Error = std::io::Error;
        fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, Self::Error> {
            Ok(self.0.get(path).cloned())
        }
        fn list_files(&mut self, dir: &str) -> Result<Vec<String>, Self::Error> {
            let prefix = format!("{dir}/");
            Ok(self
                .0
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect())
        }
        fn apply_changes(
            &mut self,
            writes: &BTreeMap<String, Vec<u8>>,
            removes: &[String],
        ) -> Result<(), Self::Error> {
            for r in removes {
                self.0.remove(r);
            }
            self.0.extend(writes.clone());
            Ok(())
        }
    }

    fn card() -> Card {
        render(
            &crate::card::tests::plan(),
            &NodeSecrets {
                token: "t".into(),
                ..Default::default()
            },
            &NodeHa::default(),
            &Os {
                codename: "bookworm".into(),
                first_boot: FirstBoot::SystemdRun,
            },
            &Templates::builtin(),
            b"agent",
            RenderOptions { build_time: 1 },
        )
        .unwrap()
    }

    fn base() -> Mem {
        let mut m = Mem::default();
        m.0.insert(
            "cmdline.txt".into(),
            b"console=tty1 root=PARTUUID=1-02 rootwait\n".to_vec(),
        );
        m.0.insert("config.txt".into(), b"arm_64bit=1\n[all]\n".to_vec());
        m.0.insert("piimg/status.json".into(), b"{}".to_vec());
        m.0.insert("kernel8.img".into(), b"kernel".to_vec());
        m
    }

    #[test]
    fn applying_twice_is_the_same_as_once() {
        let mut m = base();
        apply_card(&mut m, &card(), &BTreeMap::new()).unwrap();
        let once = m.0.clone();
        apply_card(&mut m, &card(), &BTreeMap::new()).unwrap();
        assert_eq!(once, m.0);
        assert!(!m.0.contains_key("piimg/status.json"));
        assert_eq!(m.0["kernel8.img"], b"kernel");
        let cmd = String::from_utf8(m.0["cmdline.txt"].clone()).unwrap();
        assert_eq!(cmd.matches("cgroup_enable=memory").count(), 1);
    }

    #[test]
    fn missing_cmdline_is_reported() {
        let mut m = base();
        m.0.remove("cmdline.txt");
        let err = apply_card(&mut m, &card(), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cmdline.txt"), "{err}");
    }
}
