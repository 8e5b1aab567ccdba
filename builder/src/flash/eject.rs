//! Ejecting a flashed card where the hardware allows it: a SCSI disk (a USB card
//! reader's slot) gets START STOP UNIT with LoEj through the kernel's CDROMEJECT
//! ioctl (`upstream.toml` `[card_events]`); the reader then reports no medium until
//! the next card is inserted. An SD slot on an MMC host (and a loop device) cannot
//! eject: the card is simply removed.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;

use super::target::Target;

/// What ejecting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ejected {
    /// The medium was ejected.
    Ejected,
    /// The device cannot eject (why); the card can be removed as it is.
    NotSupported(String),
}

/// Ejects the medium of `target` (flushed and closed by the flash before).
pub fn eject(target: &Target) -> io::Result<Ejected> {
    if !target.name.starts_with("sd") {
        return Ok(Ejected::NotSupported(format!(
            "{} has no eject (only SCSI/USB readers do)",
            target.name
        )));
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&target.resolved)?;
    let req = crate::upstream::facts().card_events.eject_ioctl;
    // SAFETY: CDROMEJECT takes no argument; the descriptor is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) {
            return Ok(Ejected::NotSupported(format!(
                "{} refused to eject ({e})",
                target.name
            )));
        }
        return Err(e);
    }
    Ok(Ejected::Ejected)
}
