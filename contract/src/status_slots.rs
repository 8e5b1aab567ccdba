//! The agent's card status as A/B slots that survive a power cut on FAT.
//!
//! The builder preallocates [`STATUS_SLOTS_FILE`] ([`SLOTS_FILE_SIZE`] zero bytes, so
//! its clusters are allocated once, at build time). The agent never allocates,
//! truncates or renames anything at run time: [`write`] overwrites the slot that does
//! not hold the newest valid report, in place, and fsyncs. A cut during that write can
//! only damage the slot being written; the other one still holds the previous report.
//!
//! Each slot is [`SLOT_SIZE`] bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic [`MAGIC`] |
//! | 8..12 | slot format version ([`SLOT_FORMAT`]), u32 LE |
//! | 12..16 | payload length, u32 LE (at most [`MAX_PAYLOAD`]) |
//! | 16..24 | sequence number, u64 LE (1 for the first report, +1 per write) |
//! | 24..28 | CRC-32 (IEEE, as zlib's `crc32`) of bytes 0..24 and the payload, u32 LE |
//! | 28..32 | zero |
//! | 32.. | payload (the status JSON), then zeros to the end of the slot |
//!
//! [`read`] takes the valid slot with the highest sequence number and names every
//! slot that is damaged (a torn write fails the checksum).

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The status slots file, relative to the boot partition root.
pub const STATUS_SLOTS_FILE: &str = "piimg/status.slots";
/// Bytes per slot (a whole number of 512-byte sectors and of any FAT cluster size).
pub const SLOT_SIZE: usize = 32 * 1024;
/// Number of slots (A and B).
pub const SLOT_COUNT: usize = 2;
/// Size of [`STATUS_SLOTS_FILE`] as the builder preallocates it.
pub const SLOTS_FILE_SIZE: usize = SLOT_SIZE * SLOT_COUNT;
/// First bytes of a written slot.
pub const MAGIC: [u8; 8] = *b"PIIMGST\x01";
/// Version of the slot layout described in the module documentation.
pub const SLOT_FORMAT: u32 = 1;
/// Bytes of header in front of the payload.
pub const HEADER_SIZE: usize = 32;
/// Largest payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT_SIZE - HEADER_SIZE;

/// Why the slots could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// Reading, writing or syncing the file failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The slots file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The payload does not fit in a slot.
    #[error("status report is {len} bytes, a status slot holds at most {MAX_PAYLOAD}")]
    TooLarge {
        /// Payload length.
        len: usize,
    },
}

/// One slot that holds a valid report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSlot {
    /// Slot index (0 = A, 1 = B).
    pub slot: usize,
    /// Sequence number of the write that filled it.
    pub sequence: u64,
    /// The report's bytes.
    pub payload: Vec<u8>,
}

/// A slot that was written but cannot be trusted (torn write, damage, unknown format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotProblem {
    /// Slot index (0 = A, 1 = B).
    pub slot: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for SlotProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = self.slot * SLOT_SIZE;
        write!(
            f,
            "{STATUS_SLOTS_FILE} slot {} (bytes {start}..{}): {}",
            slot_name(self.slot),
            start + SLOT_SIZE,
            self.reason
        )
    }
}

/// What [`read`] found in the slots file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotsRead {
    /// Valid slots, newest (highest sequence) first.
    pub valid: Vec<ValidSlot>,
    /// Slots that were written but are not valid (a never-written, all-zero slot is
    /// not a problem).
    pub problems: Vec<SlotProblem>,
}

impl SlotsRead {
    /// The newest valid slot, if any.
    pub fn newest(&self) -> Option<&ValidSlot> {
        self.valid.first()
    }
}

/// `A` or `B`.
pub fn slot_name(slot: usize) -> char {
    char::from(b'A' + (slot as u8 % 26))
}

/// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, init and xorout all ones).
fn crc32(parts: &[&[u8]]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for part in parts {
        for &b in *part {
            crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One whole slot ([`SLOT_SIZE`] bytes) holding `payload` as write `sequence`.
pub fn encode(sequence: u64, payload: &[u8]) -> Result<Vec<u8>, SlotError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SlotError::TooLarge { len: payload.len() });
    }
    let mut slot = vec![0u8; SLOT_SIZE];
    slot[0..8].copy_from_slice(&MAGIC);
    slot[8..12].copy_from_slice(&SLOT_FORMAT.to_le_bytes());
    slot[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    slot[16..24].copy_from_slice(&sequence.to_le_bytes());
    let crc = crc32(&[&slot[0..24], payload]);
    slot[24..28].copy_from_slice(&crc.to_le_bytes());
    slot[HEADER_SIZE..HEADER_SIZE + payload.len()].copy_from_slice(payload);
    Ok(slot)
}

/// What one slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// All zeros: never written.
    Empty,
    /// A complete report.
    Valid {
        /// Its sequence number.
        sequence: u64,
        /// Its bytes.
        payload: Vec<u8>,
    },
    /// Written, but not a complete report; says why.
    Invalid(String),
}

/// Decodes one slot (`bytes` may be shorter than [`SLOT_SIZE`] when the file is short).
pub fn decode(bytes: &[u8]) -> Decoded {
    if bytes.iter().all(|&b| b == 0) {
        return if bytes.len() < SLOT_SIZE {
            Decoded::Invalid(format!(
                "the file ends {} bytes into this slot",
                bytes.len()
            ))
        } else {
            Decoded::Empty
        };
    }
    if bytes.len() < HEADER_SIZE || bytes[0..8] != MAGIC {
        return Decoded::Invalid(
            "no slot header (a write that was cut before its first sector reached the card, \
             or damage)"
                .into(),
        );
    }
    let format = le32(bytes, 8);
    if format != SLOT_FORMAT {
        return Decoded::Invalid(format!(
            "slot format {format}, this piimg reads format {SLOT_FORMAT}; use a newer piimg"
        ));
    }
    let len = le32(bytes, 12) as usize;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[16..24]);
    let sequence = u64::from_le_bytes(seq);
    if len > MAX_PAYLOAD {
        return Decoded::Invalid(format!(
            "header says {len} payload bytes, more than a slot holds ({MAX_PAYLOAD}): damaged"
        ));
    }
    if bytes.len() < HEADER_SIZE + len {
        return Decoded::Invalid(format!(
            "write {sequence} needs {} bytes but the file ends {} bytes into this slot",
            HEADER_SIZE + len,
            bytes.len()
        ));
    }
    let payload = &bytes[HEADER_SIZE..HEADER_SIZE + len];
    let stored = le32(bytes, 24);
    if crc32(&[&bytes[0..24], payload]) != stored {
        return Decoded::Invalid(format!(
            "write {sequence} is torn or damaged (checksum mismatch): the power was probably \
             cut while it was written"
        ));
    }
    Decoded::Valid {
        sequence,
        payload: payload.to_vec(),
    }
}

/// Reads the slots out of the whole file's bytes.
pub fn read(file: &[u8]) -> SlotsRead {
    let mut out = SlotsRead::default();
    for slot in 0..SLOT_COUNT {
        let start = (slot * SLOT_SIZE).min(file.len());
        let end = ((slot + 1) * SLOT_SIZE).min(file.len());
        match decode(&file[start..end]) {
            Decoded::Empty => {}
            Decoded::Valid { sequence, payload } => out.valid.push(ValidSlot {
                slot,
                sequence,
                payload,
            }),
            Decoded::Invalid(reason) => out.problems.push(SlotProblem { slot, reason }),
        }
    }
    out.valid
        .sort_by(|a, b| b.sequence.cmp(&a.sequence).then(a.slot.cmp(&b.slot)));
    out
}

/// Writes `payload` as the newest report: overwrites, in place, the slot that does not
/// hold the newest valid report, then fsyncs. Returns the sequence number written.
///
/// The file is never truncated, grown or renamed when it has its full size. A missing
/// or short file (a card built before status slots) is extended to
/// [`SLOTS_FILE_SIZE`] first, which allocates once and is not power-cut safe.
pub fn write(path: &Path, payload: &[u8]) -> Result<u64, SlotError> {
    let io_err = |what: &'static str| {
        move |source| SlotError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(SlotError::TooLarge { len: payload.len() });
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("opening the status slots"))?;
    let mut current = Vec::with_capacity(SLOTS_FILE_SIZE);
    (&mut file)
        .take(SLOTS_FILE_SIZE as u64)
        .read_to_end(&mut current)
        .map_err(io_err("reading the status slots"))?;
    if current.len() < SLOTS_FILE_SIZE {
        file.set_len(SLOTS_FILE_SIZE as u64)
            .map_err(io_err("preallocating the status slots"))?;
    }
    let found = read(&current);
    let (target, sequence) = match found.newest() {
        Some(n) => ((n.slot + 1) % SLOT_COUNT, n.sequence.wrapping_add(1)),
        None => (0, 1),
    };
    let bytes = encode(sequence, payload)?;
    file.write_all_at(&bytes, (target * SLOT_SIZE) as u64)
        .map_err(io_err("writing a status slot"))?;
    file.sync_all()
        .map_err(io_err("syncing the status slots"))?;
    Ok(sequence)
}

/// Writes `status` with [`write`]: pretty JSON, or compact JSON when the pretty form
/// does not fit in a slot.
pub fn write_status(path: &Path, status: &crate::AgentStatus) -> Result<u64, SlotError> {
    let pretty = status.to_json() + "\n";
    if pretty.len() <= MAX_PAYLOAD {
        return write(path, pretty.as_bytes());
    }
    let compact = serde_json::to_string(status).unwrap_or_default();
    write(path, compact.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        // The CRC-32/ISO-HDLC check value of "123456789" (zlib.crc32).
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    }

    #[test]
    fn writes_alternate_and_the_newest_wins() {
        let dir = tempfile_dir();
        let path = dir.join("status.slots");
        std::fs::write(&path, vec![0u8; SLOTS_FILE_SIZE]).unwrap();
        assert_eq!(read(&std::fs::read(&path).unwrap()), SlotsRead::default());
        for (i, text) in ["one", "two", "three"].iter().enumerate() {
            assert_eq!(write(&path, text.as_bytes()).unwrap(), i as u64 + 1);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), SLOTS_FILE_SIZE, "the file never changes size");
            let r = read(&bytes);
            assert!(r.problems.is_empty(), "{:?}", r.problems);
            let n = r.newest().unwrap();
            assert_eq!((n.slot, n.sequence), (i % 2, i as u64 + 1));
            assert_eq!(n.payload, text.as_bytes());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_created_full_size() {
        let dir = tempfile_dir();
        let path = dir.join("status.slots");
        write(&path, b"x").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            SLOTS_FILE_SIZE as u64
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_cut_at_every_sector_keeps_the_previous_report() {
        // Slot A holds write 1; write 2 goes to slot B and is cut after `cut` bytes
        // (the rest of B keeps what it held: zeros, or an older write 0 there).
        let old = encode(1, br#"{"step":"hostname"}"#).unwrap();
        let new_payload = vec![b'n'; 3000];
        let new = encode(2, &new_payload).unwrap();
        for previous_b in [vec![0u8; SLOT_SIZE], encode(0, &[b'o'; 5000]).unwrap()] {
            for cut in (0..=SLOT_SIZE).step_by(512) {
                let mut file = old.clone();
                let mut b = previous_b.clone();
                b[..cut].copy_from_slice(&new[..cut]);
                file.extend_from_slice(&b);
                let r = read(&file);
                let n = r.newest().unwrap();
                if cut >= HEADER_SIZE + new_payload.len() {
                    // Everything that counts reached the card.
                    assert_eq!((n.slot, n.sequence), (1, 2), "cut {cut}");
                    assert!(r.problems.is_empty(), "cut {cut}: {:?}", r.problems);
                } else {
                    assert_eq!((n.slot, n.sequence), (0, 1), "cut {cut}");
                    assert_eq!(n.payload, br#"{"step":"hostname"}"#);
                    if cut > 0 {
                        assert_eq!(r.problems.len(), 1, "cut {cut}: {:?}", r.problems);
                        assert_eq!(r.problems[0].slot, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn a_damaged_slot_is_named_and_the_other_one_read() {
        let mut file = encode(5, b"five").unwrap();
        let mut b = encode(6, b"six").unwrap();
        b[HEADER_SIZE] ^= 0x20;
        file.extend_from_slice(&b);
        let r = read(&file);
        assert_eq!(r.newest().unwrap().payload, b"five");
        let msg = r.problems[0].to_string();
        assert!(
            msg.contains("slot B (bytes 32768..65536)") && msg.contains("write 6 is torn"),
            "{msg}"
        );
    }

    #[test]
    fn oversized_payloads_and_unknown_formats_are_refused() {
        assert!(matches!(
            encode(1, &vec![0; MAX_PAYLOAD + 1]),
            Err(SlotError::TooLarge { .. })
        ));
        let mut slot = encode(1, b"x").unwrap();
        slot[8] = 9;
        assert!(matches!(decode(&slot), Decoded::Invalid(r) if r.contains("slot format 9")));
        let short = &encode(1, &[1; 600]).unwrap()[..512];
        assert!(matches!(decode(short), Decoded::Invalid(r) if r.contains("file ends 512")));
    }

    #[test]
    fn a_status_too_long_for_pretty_json_is_written_compact() {
        let dir = tempfile_dir();
        let path = dir.join("status.slots");
        let step = crate::StepRecord {
            name: "k3s-install".into(),
            result: crate::StepResult::Error,
            message: "m".into(),
            at: "2026-11-24T10:00:00Z".into(),
        };
        let mut status = crate::AgentStatus {
            contract_version: crate::CONTRACT_VERSION,
            node_name: "cp-1".into(),
            agent_version: "0.1.0".into(),
            step: "k3s-install".into(),
            result: crate::StepResult::Error,
            message: "m".into(),
            complete: false,
            started_at: "2026-11-24T10:00:00Z".into(),
            updated_at: "2026-11-24T10:05:00Z".into(),
            steps: vec![step; 1],
        };
        // Grow the steps until the pretty form no longer fits but the compact one does.
        while status.to_json().len() < MAX_PAYLOAD {
            status.steps.push(status.steps[0].clone());
        }
        assert!(serde_json::to_string(&status).unwrap().len() < MAX_PAYLOAD);
        write_status(&path, &status).unwrap();
        let r = read(&std::fs::read(&path).unwrap());
        let back: crate::AgentStatus =
            serde_json::from_slice(&r.newest().unwrap().payload).unwrap();
        assert_eq!(back, status);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "piimg-contract-slots-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
