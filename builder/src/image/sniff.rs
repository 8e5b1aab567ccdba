//! Recognising what a file is from its first bytes, so a compressed download or a bare
//! file system given as an image gets a useful message instead of a parse error.

/// What the first bytes of a file say it is, when it is not a disk image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A compressed stream: format name and a command that decompresses `file`.
    Compressed {
        /// `xz`, `zstd`, `gzip`, `bzip2`, `zip`.
        format: &'static str,
        /// The decompress command for this file.
        tool: String,
    },
    /// Something else that is recognisably not a partitioned disk.
    Other(&'static str),
}

/// Looks at `head` (the first bytes of the file named `file_name`).
pub fn sniff(head: &[u8], file_name: &str) -> Option<Sniffed> {
    let compressed =
        |format: &'static str, tool: String| Some(Sniffed::Compressed { format, tool });
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return compressed("xz", format!("xz -dk {file_name}"));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return compressed("zstd", format!("zstd -d {file_name}"));
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return compressed("gzip", format!("gzip -dk {file_name}"));
    }
    if head.starts_with(b"BZh") && head.len() > 3 && head[3].is_ascii_digit() {
        return compressed("bzip2", format!("bzip2 -dk {file_name}"));
    }
    if head.starts_with(b"PK\x03\x04") {
        return compressed("zip", format!("unzip {file_name}"));
    }
    if head.len() >= 1082 && head[1080..1082] == [0x53, 0xef] && !has_boot_signature(head) {
        return Some(Sniffed::Other(
            "it is a bare ext2/3/4 file system, not a whole disk with a partition table",
        ));
    }
    if head.len() >= 90 && (&head[82..87] == b"FAT32" || &head[54..59] == b"FAT16") {
        return Some(Sniffed::Other(
            "it is a bare FAT file system, not a whole disk with a partition table",
        ));
    }
    if head.starts_with(b"\x7fELF") {
        return Some(Sniffed::Other("it is an ELF executable"));
    }
    None
}

/// True when bytes 510..512 hold the 0x55 0xAA boot-sector signature.
pub fn has_boot_signature(head: &[u8]) -> bool {
    head.len() >= 512 && head[510] == 0x55 && head[511] == 0xaa
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_formats_are_named() {
        let cases: [(&[u8], &str); 4] = [
            (&[0xfd, b'7', b'z', b'X', b'Z', 0, 1], "xz"),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0], "zstd"),
            (&[0x1f, 0x8b, 8, 0], "gzip"),
            (b"BZh91AY", "bzip2"),
        ];
        for (head, want) in cases {
            match sniff(head, "x.img") {
                Some(Sniffed::Compressed { format, tool }) => {
                    assert_eq!(format, want);
                    assert!(tool.contains("x.img"), "{tool}");
                }
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    #[test]
    fn plain_text_is_not_recognised() {
        assert_eq!(sniff(b"hello world", "x"), None);
    }
}
