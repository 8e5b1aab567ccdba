//! The persisted state machine ([`STATE_FILE`]): which steps are done, what was
//! decided, and each step's latest outcome; [`StateStore`] loads, saves and locks it.

use crate::error::{Error, io};
use crate::fsx;
use crate::join::Join;
use crate::step_id::StepId;
use piimg_contract::{STATE_FILE, StepRecord};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Version of the state file layout.
pub const STATE_VERSION: u32 = 1;

/// Everything the agent remembers across reboots and power cuts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Layout version ([`STATE_VERSION`]).
    pub version: u32,
    /// Names of finished steps, in the order they finished.
    pub done: Vec<String>,
    /// The join decision, once made (kept so a resumed run does not change its mind).
    pub join: Option<Join>,
    /// Unix time of the first run.
    pub started_at: u64,
    /// Latest outcome per step, in first-run order (one entry per step).
    pub records: Vec<StepRecord>,
    /// True once every step is done.
    pub complete: bool,
    /// Names of the run-once scripts that finished (exit 0): never run again.
    #[serde(default)]
    pub run_once_done: Vec<String>,
}

impl State {
    /// A fresh state started at `now`.
    pub fn new(now: u64) -> Self {
        State {
            version: STATE_VERSION,
            started_at: now,
            ..State::default()
        }
    }

    /// True if `step` finished.
    pub fn is_done(&self, step: StepId) -> bool {
        self.done.iter().any(|s| s == step.name())
    }

    /// Marks `step` finished (once).
    pub fn mark_done(&mut self, step: StepId) {
        if !self.is_done(step) {
            self.done.push(step.name().to_string());
        }
    }

    /// Records the latest outcome of a step, replacing an earlier one.
    pub fn record(&mut self, rec: StepRecord) {
        match self.records.iter_mut().find(|r| r.name == rec.name) {
            Some(old) => *old = rec,
            None => self.records.push(rec),
        }
    }
}

/// The state file of one node, and the lock next to it.
#[derive(Debug, Clone)]
pub struct StateStore {
    file: PathBuf,
}

impl StateStore {
    /// The state at `file` (the node's [`STATE_FILE`] resolved under `--root`).
    pub fn new(file: PathBuf) -> Self {
        StateStore { file }
    }

    fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("/"))
    }

    /// Loads the state; a missing file is a fresh start at `now`.
    pub fn load(&self, now: u64) -> Result<State, Error> {
        match std::fs::read_to_string(&self.file) {
            Ok(text) => {
                let st: State = serde_json::from_str(&text).map_err(|e| {
                    Error::failed(format!(
                        "{STATE_FILE}: unreadable ({e}); delete it to start provisioning over"
                    ))
                })?;
                if st.version != STATE_VERSION {
                    return Err(Error::failed(format!(
                        "{STATE_FILE}: state version {} but this agent writes {STATE_VERSION}",
                        st.version
                    )));
                }
                Ok(st)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::new(now)),
            Err(e) => Err(io(STATE_FILE)(e)),
        }
    }

    /// Saves the state atomically (0600, in a 0700 directory).
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(state).unwrap_or_default() + "\n";
        fsx::ensure_dir(self.dir(), 0o700, None).map_err(io(state_dir()))?;
        fsx::write_atomic(&self.file, text.as_bytes(), 0o600, None).map_err(io(STATE_FILE))?;
        Ok(())
    }

    /// Takes the single-instance lock (`lock` beside the state file); held until the
    /// returned file is dropped.
    pub fn lock(&self) -> Result<File, Error> {
        let shown = format!("{}/lock", state_dir());
        fsx::ensure_dir(self.dir(), 0o700, None).map_err(io(state_dir()))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir().join("lock"))
            .map_err(io(&shown))?;
        match fsx::try_lock_exclusive(&f) {
            Ok(true) => Ok(f),
            Ok(false) => Err(Error::failed(format!(
                "another piimg-firstboot holds {shown}; not running twice"
            ))),
            Err(e) => Err(io(shown)(e)),
        }
    }
}

/// The state file's directory as a node path (`/var/lib/piimg`), for messages.
fn state_dir() -> String {
    Path::new(STATE_FILE)
        .parent()
        .map_or_else(String::new, |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_store_round_trips_and_refuses_a_second_holder_of_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("var/lib/piimg/state.json"));
        let mut st = store.load(42).unwrap();
        assert_eq!(st, State::new(42));
        st.mark_done(StepId::Secrets);
        st.mark_done(StepId::Secrets);
        st.join = Some(Join::ClusterInit);
        store.save(&st).unwrap();
        assert_eq!(st.done, ["secrets"]);
        assert!(st.is_done(StepId::Secrets) && !st.is_done(StepId::Files));
        assert_eq!(store.load(0).unwrap(), st);
        assert_eq!(
            std::fs::metadata(&store.file).unwrap().mode() & 0o7777,
            0o600
        );

        let held = store.lock().unwrap();
        let e = store.lock().unwrap_err().to_string();
        assert!(
            e.contains("another piimg-firstboot holds /var/lib/piimg/lock"),
            "{e}"
        );
        drop(held);
        store.lock().unwrap();

        std::fs::write(&store.file, "{").unwrap();
        let e = store.load(0).unwrap_err().to_string();
        assert!(e.contains("delete it to start provisioning over"), "{e}");
    }
}
