//! Saying what a file that is not a disk image is, from its first bytes, so `flash`
//! refuses it with a name the user recognises ("a text file") rather than a parse error.

use crate::image::ImageError;

/// Compressed formats `flash` can stream, by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Not compressed: the raw disk image.
    None,
    /// `.xz` (magic FD 37 7A 58 5A 00).
    Xz,
    /// `.zst` (magic 28 B5 2F FD).
    Zstd,
    /// `.gz` (magic 1F 8B).
    Gzip,
}

/// The compression `head` (a file's first bytes) starts with, or `Err` naming a
/// compressed format flash does not read.
pub fn compression(head: &[u8]) -> Result<Compression, &'static str> {
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Ok(Compression::Xz);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Compression::Zstd);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Compression::Gzip);
    }
    if head.starts_with(b"BZh") {
        return Err("bzip2");
    }
    if head.starts_with(b"PK\x03\x04") {
        return Err("zip");
    }
    Ok(Compression::None)
}

/// What `head` looks like when the image engine found no disk image in it: a text
/// file, a bare file system, or the engine's own reason.
pub fn describe(head: &[u8], err: &ImageError) -> String {
    match err {
        ImageError::Empty { .. } => return "it is an empty file (0 bytes)".into(),
        ImageError::Compressed { format, .. } => {
            return format!("it is {format}-compressed data");
        }
        _ => {}
    }
    if looks_like_text(head) {
        return "it is a text file".into();
    }
    match err {
        ImageError::NotADiskImage { reason, .. } if reason.starts_with("no MBR signature") => {
            format!("it is binary data without a partition table ({reason})")
        }
        ImageError::NotADiskImage { reason, .. } => reason.clone(),
        ImageError::BadTable { reason, .. } => format!("its partition table is damaged: {reason}"),
        other => other.to_string(),
    }
}

/// Printable UTF-8 (tabs and newlines allowed) in the first bytes, no NUL.
pub fn looks_like_text(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(4096)];
    if sample.is_empty() {
        return false;
    }
    // A multi-byte character may be cut at the end of the sample.
    let text = match std::str::from_utf8(sample) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&sample[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary() {
        assert!(looks_like_text(b"root:x:0:0:root:/root:/bin/bash\n"));
        assert!(looks_like_text("héllo wörld\n".as_bytes()));
        assert!(!looks_like_text(&[0u8; 512]));
        assert!(!looks_like_text(&[0x8f, 0x01, 0xff, 0x10]));
        assert!(!looks_like_text(b""));
    }

    #[test]
    fn compression_magic() {
        assert_eq!(
            compression(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Ok(Compression::Xz)
        );
        assert_eq!(compression(b"hello"), Ok(Compression::None));
        assert_eq!(
            compression(&[0x28, 0xb5, 0x2f, 0xfd, 1]),
            Ok(Compression::Zstd)
        );
        assert_eq!(compression(b"BZh91AY&"), Err("bzip2"));
    }
}
