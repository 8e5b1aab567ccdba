//! The uncompressed size of an `.xz` file, read from its indexes without decoding it.
//!
//! Format (xz-file-format-1.2.1.txt, sections 2.1.2 and 4, tukaani-project/xz
//! doc/xz-file-format.txt): a file is one or more streams, each optionally followed by
//! stream padding (zero bytes, a multiple of four). A stream ends with a 12-byte
//! footer: CRC32 (4), Backward Size (4, little endian: the index size is
//! `(stored + 1) * 4`), Stream Flags (2), magic `YZ`. The index before it is: an
//! indicator byte 0x00, the number of records (multibyte integer), then per block its
//! unpadded size and uncompressed size (multibyte integers), padding to four bytes and
//! a CRC32. A stream starts with a 12-byte header; its blocks take their unpadded
//! sizes rounded up to four bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// What the indexes of an `.xz` file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XzSize {
    /// Total uncompressed bytes over every stream.
    pub uncompressed: u64,
    /// Number of streams (concatenated `.xz` files).
    pub streams: u32,
}

const HEADER: u64 = 12;
const FOOTER: u64 = 12;
/// Largest index read into memory (a 64 GiB image in 1 MiB blocks needs ~1 MiB).
const MAX_INDEX: u64 = 64 << 20;

/// Reads the uncompressed size of the `.xz` file `f` of `len` bytes from its stream
/// footers and indexes. The error says which part is malformed.
pub fn xz_size(f: &File, len: u64) -> Result<XzSize, String> {
    let mut end = len;
    let mut total: u64 = 0;
    let mut streams = 0;
    while end > 0 {
        // Stream padding: zero bytes in groups of four.
        let mut word = [0u8; 4];
        while end >= 4 {
            read(f, &mut word, end - 4)?;
            if word != [0; 4] {
                break;
            }
            end -= 4;
        }
        if end < HEADER + FOOTER {
            return Err(format!(
                "{end} bytes before byte {end} cannot hold an xz stream header and footer"
            ));
        }
        let mut footer = [0u8; 12];
        read(f, &mut footer, end - FOOTER)?;
        if &footer[10..12] != b"YZ" {
            return Err(format!(
                "no xz stream footer (magic \"YZ\") before byte {end}: the file is truncated or not .xz"
            ));
        }
        let backward = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]);
        let index_size = (u64::from(backward) + 1) * 4;
        if index_size > MAX_INDEX || index_size + FOOTER + HEADER > end {
            return Err(format!(
                "the xz stream ending at byte {end} claims an index of {index_size} bytes, more than the stream holds"
            ));
        }
        let index_at = end - FOOTER - index_size;
        let mut index = vec![0u8; index_size as usize];
        read(f, &mut index, index_at)?;
        let (blocks, unpadded) =
            parse_index(&index).map_err(|e| format!("xz index at byte {index_at}: {e}"))?;
        total = total
            .checked_add(blocks)
            .ok_or_else(|| "the xz indexes add up to more than 2^64 bytes".to_string())?;
        let stream_len = HEADER + unpadded + index_size + FOOTER;
        if stream_len > end {
            return Err(format!(
                "the xz stream ending at byte {end} is {stream_len} bytes long by its index, longer than the file before it"
            ));
        }
        end -= stream_len;
        let mut magic = [0u8; 6];
        read(f, &mut magic, end)?;
        if magic != [0xfd, b'7', b'z', b'X', b'Z', 0] {
            return Err(format!(
                "no xz stream header at byte {end}, where the index of the stream after it says one starts"
            ));
        }
        streams += 1;
    }
    Ok(XzSize {
        uncompressed: total,
        streams,
    })
}

/// Sums one index: (uncompressed bytes, compressed bytes of its blocks, padded).
fn parse_index(index: &[u8]) -> Result<(u64, u64), String> {
    if index.first() != Some(&0) {
        return Err("does not start with the index indicator 0x00".into());
    }
    let mut pos = 1;
    let records = varint(index, &mut pos)?;
    let (mut uncompressed, mut compressed) = (0u64, 0u64);
    for _ in 0..records {
        let unpadded = varint(index, &mut pos)?;
        let size = varint(index, &mut pos)?;
        compressed = compressed
            .checked_add(unpadded.div_ceil(4) * 4)
            .ok_or("block sizes overflow")?;
        uncompressed = uncompressed.checked_add(size).ok_or("sizes overflow")?;
    }
    // Index padding to four bytes, then the CRC32.
    if pos.div_ceil(4) * 4 + 4 != index.len() {
        return Err(format!(
            "{records} records end at byte {pos}, which does not match its size of {} bytes",
            index.len()
        ));
    }
    Ok((uncompressed, compressed))
}

/// One xz multibyte integer (7 bits a byte, little endian, at most 9 bytes).
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let b = *buf.get(*pos).ok_or("a number runs past the end")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a number is longer than 9 bytes".into())
}

fn read(f: &File, buf: &mut [u8], at: u64) -> Result<(), String> {
    f.read_exact_at(buf, at)
        .map_err(|e| format!("reading byte {at}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn size_of(bytes: &[u8]) -> Result<XzSize, String> {
        let mut t = tempfile::tempfile().unwrap();
        t.write_all(bytes).unwrap();
        xz_size(&t, bytes.len() as u64)
    }

    #[test]
    fn sizes_of_single_padded_and_concatenated_streams() {
        let a = vec![7u8; 300_000];
        let one = xz(&a);
        assert_eq!(
            size_of(&one),
            Ok(XzSize {
                uncompressed: 300_000,
                streams: 1
            })
        );
        let mut two = one.clone();
        two.extend_from_slice(&[0; 8]);
        two.extend_from_slice(&xz(b"hello"));
        assert_eq!(
            size_of(&two),
            Ok(XzSize {
                uncompressed: 300_005,
                streams: 2
            })
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_named() {
        let one = xz(&[1u8; 1000]);
        let e = size_of(&one[..one.len() - 3]).unwrap_err();
        assert!(e.contains("footer"), "{e}");
        let e = size_of(b"not xz at all, just some text bytes here").unwrap_err();
        assert!(e.contains("footer"), "{e}");
    }
}
