//! The test seam of a flash: faults to inject, read from the environment.

/// Test seam: faults to inject into a flash. All `None` in normal use.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultInjection {
    /// Invert the byte at this offset of the target after writing, before verifying.
    pub flip_byte_at: Option<u64>,
    /// Stop with [`FlashError::Interrupted`] at the first chunk past the first MiB that
    /// starts after this many bytes were handed to the writers; chunks already handed
    /// out are written, the held-back first MiB is not (the card is left erased).
    pub stop_after_bytes: Option<u64>,
}

impl FaultInjection {
    /// Faults from `PIIMG_FLASH_TEST_FLIP_OFFSET` / `PIIMG_FLASH_TEST_STOP_AFTER`, read
    /// only in debug builds so a release binary can never be told to corrupt a card.
    pub fn from_env() -> Self {
        if !cfg!(debug_assertions) {
            return Self::default();
        }
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse().ok());
        Self {
            flip_byte_at: var("PIIMG_FLASH_TEST_FLIP_OFFSET"),
            stop_after_bytes: var("PIIMG_FLASH_TEST_STOP_AFTER"),
        }
    }

    /// `PIIMG_FLASH_TEST_FLIP_DEVICE` (debug builds only): the one device of a
    /// several-card flash the flip fault applies to.
    pub fn flip_device_from_env() -> Option<std::path::PathBuf> {
        if !cfg!(debug_assertions) {
            return None;
        }
        std::env::var_os("PIIMG_FLASH_TEST_FLIP_DEVICE").map(std::path::PathBuf::from)
    }
}
