//! bmaptool's block map format (version 2.0): which ranges of an image hold data.
//!
//! A `.bmap` lists the mapped (non-hole) blocks of a sparse image with a SHA256 per
//! range, so a flasher writes only those and can check them. The layout written here
//! follows bmap-tools' `BmapCreate.py` (format 2.0) and is read back by `bmaptool copy`;
//! [`Bmap::parse`] reads what `bmaptool create` writes and checks its
//! `BmapFileChecksum` the way `BmapCopy.py` does (the checksum computed over the file
//! with that field's value replaced by ASCII zeros).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::digest::Sha256Digest;
use crate::sparse;

/// Block size of the maps piimg writes (bmaptool uses the file system's, 4096 on ext4).
pub const BLOCK_SIZE: u64 = 4096;

/// The only format version piimg writes; it reads every 2.x.
pub const FORMAT_VERSION: &str = "2.0";

/// Length of a SHA256 digest in hex.
const SHA256_HEX_LEN: usize = 64;

/// Chunk size for hashing reads.
const READ_CHUNK: usize = 4 << 20;

/// A run of mapped blocks `first..=last` and the SHA256 of their bytes (hex).
///
/// The last block of an image whose size is not a multiple of the block size is
/// hashed only up to the image's end, as bmaptool does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRange {
    /// First mapped block (inclusive).
    pub first: u64,
    /// Last mapped block (inclusive).
    pub last: u64,
    /// SHA256 of the range's bytes.
    pub sha256: Sha256Digest,
}

/// The block map of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Size of the image in bytes.
    pub image_size: u64,
    /// Size of one block in bytes.
    pub block_size: u64,
    /// Number of mapped blocks (the sum over `ranges`).
    pub mapped_blocks: u64,
    /// Mapped ranges, sorted, not overlapping.
    pub ranges: Vec<BlockRange>,
}

/// Why a `.bmap` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The text is not well-formed XML.
    #[error(
        "not a well-formed bmap XML document: {0} (hint: is this a .bmap from bmaptool create or piimg build?)"
    )]
    Xml(String),
    /// The root element is not `<bmap>`.
    #[error("root element is <{0}>, expected <bmap> (hint: not a bmaptool block map)")]
    NotBmap(String),
    /// The format version is not one piimg reads.
    #[error(
        "bmap format version {0:?} is not supported: piimg reads 2.x (what bmaptool 3.x writes); recreate it with `bmaptool create`"
    )]
    Version(String),
    /// A required element is absent.
    #[error("missing <{0}> element in the bmap")]
    Missing(&'static str),
    /// A numeric field does not hold a number.
    #[error("line {line}: <{field}> holds {value:?}, expected a non-negative integer")]
    BadNumber {
        /// Element name.
        field: &'static str,
        /// Its text.
        value: String,
        /// 1-based line number.
        line: u32,
    },
    /// The checksum type is not SHA256.
    #[error(
        "checksum type {0:?} is not supported: piimg verifies sha256 only (bmaptool create's default)"
    )]
    ChecksumType(String),
    /// `BmapFileChecksum` does not match the file.
    #[error(
        "BmapFileChecksum mismatch: the bmap says {expected} but its contents hash to {actual} (the file was edited or truncated; recreate it)"
    )]
    FileChecksum {
        /// Value in the file.
        expected: String,
        /// Value computed.
        actual: String,
    },
    /// A `<Range>` element is malformed or out of bounds.
    #[error("line {line}: bad <Range> {text:?}: {reason}")]
    Range {
        /// The element's text.
        text: String,
        /// What is wrong.
        reason: String,
        /// 1-based line number.
        line: u32,
    },
    /// Header fields contradict each other or the ranges.
    #[error("inconsistent bmap: {0}")]
    Inconsistent(String),
}

impl BlockRange {
    /// Number of blocks in the range.
    pub fn blocks(&self) -> u64 {
        self.last - self.first + 1
    }
}

impl Bmap {
    /// Maps `file`'s written data ([`crate::sparse::data_extents`]: FIEMAP, else
    /// SEEK_DATA/SEEK_HOLE) in [`BLOCK_SIZE`] blocks and hashes
    /// every mapped range. This is the file's hole map, which depends on how the file
    /// was copied and may leave out zero-filled metadata a card needs; `piimg build`
    /// writes the file-system map instead ([`crate::output::blockmap`]).
    pub fn scan(file: &File) -> io::Result<Bmap> {
        let image_size = file.metadata()?.len();
        let blocks = sparse::to_blocks(sparse::data_extents(file, image_size)?, BLOCK_SIZE);
        let mut ranges = Vec::with_capacity(blocks.len());
        let mut buf = vec![0u8; READ_CHUNK];
        for sparse::BlockSpan { first, last } in blocks {
            let (offset, len) = byte_span(first, last, BLOCK_SIZE, image_size);
            let sha256 = hash_span(file, offset, len, &mut buf)?;
            ranges.push(BlockRange {
                first,
                last,
                sha256,
            });
        }
        Ok(Bmap::from_ranges(image_size, BLOCK_SIZE, ranges))
    }

    /// Opens and scans the image at `path`.
    pub fn scan_path(path: &Path) -> io::Result<Bmap> {
        Bmap::scan(&File::open(path)?)
    }

    /// A map of `image_size` bytes with these (sorted, disjoint) ranges.
    pub fn from_ranges(image_size: u64, block_size: u64, ranges: Vec<BlockRange>) -> Bmap {
        let mapped_blocks = ranges.iter().map(BlockRange::blocks).sum();
        Bmap {
            image_size,
            block_size,
            mapped_blocks,
            ranges,
        }
    }

    /// Number of blocks in the image (the last one possibly partial).
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size.max(1))
    }

    /// Bytes covered by the mapped ranges (clamped to the image's end).
    pub fn mapped_bytes(&self) -> u64 {
        self.extents().map(|(_, len)| len).sum()
    }

    /// The mapped ranges as `(byte offset, byte length)`, clamped to the image's end.
    pub fn extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges
            .iter()
            .map(|r| byte_span(r.first, r.last, self.block_size, self.image_size))
    }

    /// The `.bmap` XML text (bmaptool's 2.0 layout, with a valid `BmapFileChecksum`).
    pub fn to_xml(&self) -> String {
        let zeros = "0".repeat(SHA256_HEX_LEN);
        let text = self.xml_with_checksum(&zeros);
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        self.xml_with_checksum(&digest)
    }

    /// Writes [`to_xml`](Self::to_xml) to `path` atomically (mode 0644).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        crate::atomic::write_atomic(path, self.to_xml().as_bytes(), 0o644)
    }

    /// Reads and parses the `.bmap` at `path`.
    pub fn load(path: &Path) -> Result<Bmap, BmapError> {
        let text = std::fs::read_to_string(path).map_err(|source| BmapError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Bmap::parse(&text)
    }

    /// Parses a `.bmap` (format 2.x, sha256), checking its `BmapFileChecksum`, the
    /// header's consistency and every range.
    pub fn parse(xml: &str) -> Result<Bmap, BmapError> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| BmapError::Xml(e.to_string()))?;
        let root = doc.root_element();
        if root.tag_name().name() != "bmap" {
            return Err(BmapError::NotBmap(root.tag_name().name().to_string()));
        }
        let version = root.attribute("version").unwrap_or("").trim();
        let major = version.split('.').next().unwrap_or("");
        // 1.4 is the pre-release name of 2.0 (same format, see BmapCopy.py).
        if major != "2" && version != "1.4" {
            return Err(BmapError::Version(version.to_string()));
        }

        let child = |name: &'static str| {
            root.children()
                .find(|n| n.is_element() && n.tag_name().name() == name)
                .ok_or(BmapError::Missing(name))
        };
        let number = |name: &'static str| -> Result<u64, BmapError> {
            let node = child(name)?;
            let text = node.text().unwrap_or("").trim();
            text.parse().map_err(|_| BmapError::BadNumber {
                field: name,
                value: text.to_string(),
                line: doc.text_pos_at(node.range().start).row,
            })
        };
        let image_size = number("ImageSize")?;
        let block_size = number("BlockSize")?;
        let blocks_count = number("BlocksCount")?;
        let mapped_count = number("MappedBlocksCount")?;

        let cs_type = child("ChecksumType")?
            .text()
            .unwrap_or("")
            .trim()
            .to_string();
        if !cs_type.eq_ignore_ascii_case("sha256") {
            return Err(BmapError::ChecksumType(cs_type));
        }
        let file_cs = child("BmapFileChecksum")?
            .text()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        verify_file_checksum(xml, &file_cs)?;

        if block_size == 0 || !block_size.is_power_of_two() {
            return Err(BmapError::Inconsistent(format!(
                "BlockSize {block_size} is not a power of two"
            )));
        }
        if blocks_count != image_size.div_ceil(block_size) {
            return Err(BmapError::Inconsistent(format!(
                "ImageSize {image_size} bytes does not match BlocksCount {blocks_count} of {block_size} bytes"
            )));
        }

        let block_map = child("BlockMap")?;
        let mut ranges: Vec<BlockRange> = Vec::new();
        for node in block_map
            .children()
            .filter(|n| n.is_element() && n.tag_name().name() == "Range")
        {
            let text = node.text().unwrap_or("").trim();
            let line = doc.text_pos_at(node.range().start).row;
            let bad = |reason: String| BmapError::Range {
                text: text.to_string(),
                reason,
                line,
            };
            let (first, last) = parse_range_text(text).map_err(&bad)?;
            if last >= blocks_count {
                return Err(bad(format!(
                    "block {last} is past the image's {blocks_count} blocks"
                )));
            }
            let text = node
                .attribute("chksum")
                .ok_or_else(|| bad("no chksum attribute".into()))?
                .trim()
                .to_ascii_lowercase();
            let sha256 = Sha256Digest::parse_hex(&text)
                .ok_or_else(|| bad(format!("chksum {text:?} is not a sha256 hex digest")))?;
            ranges.push(BlockRange {
                first,
                last,
                sha256,
            });
        }
        ranges.sort_by_key(|r| r.first);
        for pair in ranges.windows(2) {
            if pair[1].first <= pair[0].last {
                return Err(BmapError::Inconsistent(format!(
                    "ranges {}-{} and {}-{} overlap",
                    pair[0].first, pair[0].last, pair[1].first, pair[1].last
                )));
            }
        }
        let bmap = Bmap::from_ranges(image_size, block_size, ranges);
        if bmap.mapped_blocks != mapped_count {
            return Err(BmapError::Inconsistent(format!(
                "MappedBlocksCount says {mapped_count} but the ranges hold {} blocks",
                bmap.mapped_blocks
            )));
        }
        Ok(bmap)
    }

    fn xml_with_checksum(&self, checksum: &str) -> String {
        use std::fmt::Write;
        let blocks_count = self.blocks_count();
        let percent = if blocks_count == 0 {
            0.0
        } else {
            self.mapped_blocks as f64 * 100.0 / blocks_count as f64
        };
        let mut x = String::with_capacity(2048 + self.ranges.len() * 100);
        x.push_str(HEADER_COMMENT);
        let _ = write!(
            x,
            "<bmap version=\"{FORMAT_VERSION}\">\n\
             \x20   <!-- Image size in bytes: {} -->\n\
             \x20   <ImageSize> {} </ImageSize>\n\n\
             \x20   <!-- Size of a block in bytes -->\n\
             \x20   <BlockSize> {} </BlockSize>\n\n\
             \x20   <!-- Count of blocks in the image file -->\n\
             \x20   <BlocksCount> {} </BlocksCount>\n\n\
             \x20   <!-- Count of mapped blocks: {} or {:.1}% -->\n\
             \x20   <MappedBlocksCount> {} </MappedBlocksCount>\n\n\
             \x20   <!-- Type of checksum used in this file -->\n\
             \x20   <ChecksumType> sha256 </ChecksumType>\n\n\
             \x20   <!-- The checksum of this bmap file. When it is calculated, the value of\n\
             \x20        the checksum has be zero (all ASCII \"0\" symbols).  -->\n\
             \x20   <BmapFileChecksum> {} </BmapFileChecksum>\n\n\
             \x20   <!-- The block map which consists of elements which may either be a\n\
             \x20        range of blocks or a single block. The 'chksum' attribute\n\
             \x20        (if present) is the checksum of this blocks range. -->\n\
             \x20   <BlockMap>\n",
            human_size(self.image_size),
            self.image_size,
            self.block_size,
            blocks_count,
            human_size(self.mapped_blocks * self.block_size),
            percent,
            self.mapped_blocks,
            checksum,
        );
        for r in &self.ranges {
            if r.first == r.last {
                let _ = writeln!(
                    x,
                    "        <Range chksum=\"{}\"> {} </Range>",
                    r.sha256, r.first
                );
            } else {
                let _ = writeln!(
                    x,
                    "        <Range chksum=\"{}\"> {}-{} </Range>",
                    r.sha256, r.first, r.last
                );
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        x
    }
}

/// `(byte offset, byte length)` of blocks `first..=last`, clamped to `image_size`.
pub fn byte_span(first: u64, last: u64, block_size: u64, image_size: u64) -> (u64, u64) {
    let start = first * block_size;
    let end = ((last + 1) * block_size).min(image_size);
    (start, end.saturating_sub(start))
}

/// SHA256 of `len` bytes of `file` at `offset`, read with `buf`-sized preads.
pub fn hash_span(file: &File, offset: u64, len: u64, buf: &mut [u8]) -> io::Result<Sha256Digest> {
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ends at {} while hashing", offset + done),
            ));
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(Sha256Digest::finish(hasher))
}

fn verify_file_checksum(xml: &str, expected: &str) -> Result<(), BmapError> {
    if !is_sha256_hex(expected) {
        return Err(BmapError::FileChecksum {
            expected: expected.to_string(),
            actual: "(not computed: the value is not a sha256 hex digest)".into(),
        });
    }
    // As BmapCopy.py: replace the first occurrence of the value with zeros, hash.
    let Some(pos) = xml.to_ascii_lowercase().find(expected) else {
        return Err(BmapError::Inconsistent(
            "BmapFileChecksum value not found in the text".into(),
        ));
    };
    let mut bytes = xml.as_bytes().to_vec();
    bytes[pos..pos + SHA256_HEX_LEN].fill(b'0');
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(BmapError::FileChecksum {
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

fn parse_range_text(text: &str) -> Result<(u64, u64), String> {
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{:?} is not a block number", s.trim()))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (first, last) = (num(a)?, num(b)?);
            if first > last {
                return Err(format!("first block {first} is after last block {last}"));
            }
            Ok((first, last))
        }
        None => {
            let b = num(text)?;
            Ok((b, b))
        }
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == SHA256_HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// bmaptool's `human_size`.
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {unit}");
        }
    }
    format!("{s:.1} EiB")
}

const HEADER_COMMENT: &str = r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A sparse file: 1 MiB hole-y image with data at the given byte offsets.
    fn sparse(size: u64, writes: &[(u64, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        for (off, data) in writes {
            f.as_file().write_at(data, *off).unwrap();
        }
        f.as_file().sync_all().unwrap();
        f
    }

    #[test]
    fn scan_finds_data_blocks_and_hashes_them() {
        let f = sparse(
            1 << 20,
            &[(0, b"mbr"), (10 * 4096 + 5, b"x"), (11 * 4096, b"y")],
        );
        let b = Bmap::scan(f.as_file()).unwrap();
        assert_eq!(b.image_size, 1 << 20);
        assert_eq!(b.block_size, 4096);
        let spans: Vec<_> = b.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(spans, vec![(0, 0), (10, 11)]);
        assert_eq!(b.mapped_blocks, 3);
        let mut block0 = vec![0u8; 4096];
        block0[..3].copy_from_slice(b"mbr");
        assert_eq!(b.ranges[0].sha256, Sha256Digest::of(&block0));
    }

    #[test]
    fn scan_clamps_last_partial_block() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        let b = Bmap::scan(f.as_file()).unwrap();
        assert_eq!(b.blocks_count(), 2);
        assert_eq!(b.mapped_bytes(), 5000);
        assert_eq!(b.ranges[0].sha256, Sha256Digest::of(&[7u8; 5000]));
    }

    #[test]
    fn xml_round_trips_and_checksum_is_valid() {
        let f = sparse(3 << 20, &[(0, b"a"), (2 << 20, b"b")]);
        let b = Bmap::scan(f.as_file()).unwrap();
        let xml = b.to_xml();
        assert!(xml.contains("<bmap version=\"2.0\">"));
        assert_eq!(Bmap::parse(&xml).unwrap(), b);
    }

    #[test]
    fn edited_bmap_fails_its_file_checksum() {
        let f = sparse(1 << 20, &[(0, b"a")]);
        let xml = Bmap::scan(f.as_file()).unwrap().to_xml();
        let edited = xml.replace("<ImageSize> 1048576 ", "<ImageSize> 1048577 ");
        let err = Bmap::parse(&edited).unwrap_err();
        assert!(matches!(err, BmapError::FileChecksum { .. }), "{err}");
        assert!(err.to_string().contains("BmapFileChecksum mismatch"));
    }

    /// Re-signs hand-edited XML so the later checks are reached.
    fn resign(xml: &str) -> String {
        let start = xml.find("<BmapFileChecksum> ").unwrap() + "<BmapFileChecksum> ".len();
        let mut zeroed = xml.to_string();
        zeroed.replace_range(start..start + 64, &"0".repeat(64));
        let d = hex::encode(Sha256::digest(zeroed.as_bytes()));
        zeroed.replace_range(start..start + 64, &d);
        zeroed
    }

    #[test]
    fn bad_inputs_give_clear_errors() {
        let f = sparse(1 << 20, &[(0, b"a"), (8192, b"b")]);
        let good = Bmap::scan(f.as_file()).unwrap().to_xml();
        let cases: Vec<(String, &str)> = vec![
            ("not xml <".into(), "not a well-formed bmap XML"),
            ("<foo/>".into(), "root element is <foo>"),
            (
                good.replace("version=\"2.0\"", "version=\"1.2\""),
                "format version \"1.2\" is not supported",
            ),
            (
                resign(&good.replace("<BlockSize> 4096 ", "<BlockSize> four ")),
                "<BlockSize> holds \"four\"",
            ),
            (
                resign(&good.replace("ChecksumType> sha256 ", "ChecksumType> sha1   ")),
                "checksum type \"sha1\"",
            ),
            (
                resign(&good.replace("<BlocksCount> 256 ", "<BlocksCount> 257 ")),
                "does not match BlocksCount 257",
            ),
            (
                resign(&good.replace("> 2 </Range>", "> 300 </Range>")),
                "block 300 is past the image's 256 blocks",
            ),
            (
                resign(&good.replace("> 2 </Range>", "> 5-3 </Range>")),
                "first block 5 is after last block 3",
            ),
            (
                resign(&good.replace("<MappedBlocksCount> 2 ", "<MappedBlocksCount> 3 ")),
                "MappedBlocksCount says 3 but the ranges hold 2",
            ),
            (
                resign(&good.replace("> 2 </Range>", "> 0 </Range>")),
                "overlap",
            ),
        ];
        for (xml, want) in cases {
            let err = Bmap::parse(&xml).unwrap_err().to_string();
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
        let missing = resign(&good.replace("<ChecksumType> sha256 </ChecksumType>", ""));
        assert!(
            Bmap::parse(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing <ChecksumType>")
        );
    }

    #[test]
    fn range_line_numbers_are_reported() {
        let f = sparse(1 << 20, &[(0, b"a")]);
        let good = Bmap::scan(f.as_file()).unwrap().to_xml();
        let bad = resign(&good.replace("> 0 </Range>", "> x </Range>"));
        let line = bad
            .lines()
            .position(|l| l.contains("> x </Range>"))
            .unwrap()
            + 1;
        let err = Bmap::parse(&bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("line {line}:")), "{err}");
    }

    #[test]
    fn empty_and_fully_sparse_files_map_nothing() {
        let f = sparse(0, &[]);
        assert!(Bmap::scan(f.as_file()).unwrap().ranges.is_empty());
        let f = sparse(8 << 20, &[]);
        let b = Bmap::scan(f.as_file()).unwrap();
        assert_eq!(b.mapped_blocks, 0);
        assert_eq!(Bmap::parse(&b.to_xml()).unwrap(), b);
    }

    #[test]
    fn human_size_matches_bmaptool() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(100), "100 bytes");
        assert_eq!(human_size(4096), "4.0 KiB");
        assert_eq!(human_size(10 << 20), "10.0 MiB");
    }
}
