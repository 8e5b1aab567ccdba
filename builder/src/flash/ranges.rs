//! The byte ranges a flash writes, and uniting a `.bmap`'s ranges (which carry
//! checksums) with the file systems' block map.

/// One byte range of the image to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRange {
    /// Byte offset in the image (and on the target).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Expected SHA256 from the `.bmap`, for the `.bmap`'s ranges.
    pub sha256: Option<crate::digest::Sha256Digest>,
}

/// `checked` (sorted, disjoint, each with its checksum) plus the parts of `used`
/// (`[start, end)`, sorted) that no range of `checked` covers, without checksums;
/// sorted and disjoint. `checked` ranges are kept whole so their checksums still
/// apply.
pub fn union(checked: &[SourceRange], used: &[(u64, u64)]) -> Vec<SourceRange> {
    let mut out: Vec<SourceRange> = checked.to_vec();
    let mut k = 0;
    for &(start, end) in used {
        let mut pos = start;
        while pos < end {
            while k < checked.len() && checked[k].offset + checked[k].len <= pos {
                k += 1;
            }
            match checked.get(k) {
                Some(c) if c.offset <= pos => pos = (c.offset + c.len).min(end).max(pos),
                next => {
                    let stop = next.map_or(end, |c| c.offset.min(end));
                    out.push(SourceRange {
                        offset: pos,
                        len: stop - pos,
                        sha256: None,
                    });
                    pos = stop;
                }
            }
        }
    }
    out.sort_by_key(|r| r.offset);
    out
}

/// The ranges a flash of several cards writes: `base` with `span` cut out (a range
/// that is cut loses its checksum, which was over all of it) plus `own`, the union of
/// the cards' own ranges inside `span`. Sorted and disjoint, and no range crosses a
/// bound of `span`, so every chunk is either every card's or each card's own.
pub fn with_span(base: &[SourceRange], span: (u64, u64), own: &[(u64, u64)]) -> Vec<SourceRange> {
    let mut out = Vec::new();
    for r in base {
        let end = r.offset + r.len;
        if end <= span.0 || r.offset >= span.1 {
            out.push(r.clone());
            continue;
        }
        for (s, e) in [(r.offset, span.0.min(end)), (span.1.max(r.offset), end)] {
            if s < e {
                out.push(SourceRange {
                    offset: s,
                    len: e - s,
                    sha256: None,
                });
            }
        }
    }
    let mut inside: Vec<(u64, u64)> = own
        .iter()
        .map(|&(s, e)| (s.max(span.0), e.min(span.1)))
        .filter(|(s, e)| s < e)
        .collect();
    inside.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in inside {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    out.extend(merged.into_iter().map(|(s, e)| SourceRange {
        offset: s,
        len: e - s,
        sha256: None,
    }));
    out.sort_by_key(|r| r.offset);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_cut_out_and_replaced_by_the_cards_own_ranges() {
        let base = [
            r(0, 100, Some("a")),
            r(150, 100, Some("b")),
            r(400, 10, Some("c")),
        ];
        let got = with_span(&base, (120, 200), &[(130, 140), (135, 160), (190, 260)]);
        assert_eq!(
            got,
            vec![
                r(0, 100, Some("a")),
                r(130, 30, None),
                r(190, 10, None),
                r(200, 50, None),
                r(400, 10, Some("c")),
            ]
        );
    }

    fn r(offset: u64, len: u64, sum: Option<&str>) -> SourceRange {
        SourceRange {
            offset,
            len,
            sha256: sum.map(|s| crate::digest::Sha256Digest::of(s.as_bytes())),
        }
    }

    #[test]
    fn used_parts_outside_the_bmap_are_added_without_checksums() {
        let checked = [r(0, 100, Some("a")), r(200, 100, Some("b"))];
        let used = [(50, 250), (400, 500)];
        let got = union(&checked, &used);
        assert_eq!(
            got,
            vec![
                r(0, 100, Some("a")),
                r(100, 100, None),
                r(200, 100, Some("b")),
                r(400, 100, None),
            ]
        );
        assert_eq!(union(&[], &used), vec![r(50, 200, None), r(400, 100, None)]);
        assert_eq!(union(&checked, &[]), checked.to_vec());
        // Used entirely inside a checked range adds nothing.
        assert_eq!(union(&checked, &[(210, 220)]), checked.to_vec());
    }
}
