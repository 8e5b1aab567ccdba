//! A set of byte ranges `[start, end)`: collected in any order, handed out sorted,
//! disjoint and merged (touching ranges become one).

/// Byte ranges collected from the file-system readers.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ranges {
    items: Vec<(u64, u64)>,
}

impl Ranges {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, end)`; an empty range is ignored.
    pub(crate) fn add(&mut self, start: u64, end: u64) {
        if start < end {
            // Consecutive adds are often adjacent (bitmap runs): merge them here to
            // keep the list short before the final sort.
            if let Some(last) = self.items.last_mut() {
                if start >= last.0 && start <= last.1 {
                    last.1 = last.1.max(end);
                    return;
                }
            }
            self.items.push((start, end));
        }
    }

    /// Adds `len` bytes at `start`.
    pub(crate) fn add_len(&mut self, start: u64, len: u64) {
        self.add(start, start.saturating_add(len));
    }

    /// The ranges sorted, with overlapping and touching ones merged.
    pub(crate) fn merged(mut self) -> Vec<(u64, u64)> {
        self.items.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.items.len());
        for (s, e) in self.items {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_sort_and_merge_touching_and_overlapping() {
        let mut r = Ranges::new();
        r.add(100, 200);
        r.add(0, 10);
        r.add(10, 20);
        r.add(150, 300);
        r.add(5, 5);
        r.add_len(400, 0);
        r.add_len(500, 1);
        assert_eq!(r.merged(), [(0, 20), (100, 300), (500, 501)]);
    }
}
