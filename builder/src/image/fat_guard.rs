//! Turns a panic inside fatfs into an error.
//!
//! fatfs trusts much of what it reads (cluster chains, directory entries); a
//! corrupted boot partition can make it panic instead of returning an error. piimg
//! checks the boot sector itself before fatfs sees it (see [`super::fat_raw`]), and
//! every change is staged in memory until an explicit commit, so a panic can never
//! damage the image; this guard makes it a named error ("the FAT file system is
//! damaged") rather than a crash, and keeps the default panic message off stderr for
//! panics it catches.

use std::cell::Cell;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// True while this thread runs guarded fatfs code.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once per process) a panic hook that stays silent for panics raised
/// inside [`catch`] and defers to the previous hook for every other panic.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes an [`io::Error`] saying the file system is
/// damaged, with the panic's message.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, io::Error> {
    install_quiet_hook();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the FAT file system is damaged (fatfs gave up: {msg}); run fsck.vfat on it or use a fresh image"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_invalid_data_error_with_its_message() {
        let err = catch(|| -> u32 { panic!("cluster 7 out of range") }).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("cluster 7 out of range"), "{err}");
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn values_pass_through_and_the_guard_flag_is_restored() {
        assert_eq!(catch(|| 42).unwrap(), 42);
        assert!(!GUARDED.with(Cell::get));
        let nested = catch(|| catch(|| 1).unwrap() + GUARDED.with(Cell::get) as i32);
        assert_eq!(nested.unwrap(), 2);
        assert!(!GUARDED.with(Cell::get));
    }
}
