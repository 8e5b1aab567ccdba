//! The error piimg's own FAT code raises where the on-disk structures are damaged,
//! carried through fatfs-shaped (`io::Result`) code to the edge of the FAT engine.

use std::io;

/// What is wrong with a damaged FAT structure; carried inside an [`io::Error`] of
/// kind `InvalidData` through fatfs-shaped code and turned into
/// [`super::ImageError::FatDamaged`] at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage(pub String);

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damage {}

/// An `InvalidData` error carrying a [`Damage`].
pub(crate) fn damage(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Damage(reason))
}

/// The [`Damage`] inside `e`, if it carries one.
pub(crate) fn damage_of(e: &io::Error) -> Option<&Damage> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Damage>())
}
