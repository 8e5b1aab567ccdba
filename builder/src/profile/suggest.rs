//! "Did you mean …?": the nearest valid name to a misspelt one.

/// Edit distance between two strings, by characters: insertions, deletions,
/// substitutions and swaps of neighbours each cost 1 (optimal string alignment).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo
/// (at most a third of the word's length, minimum 1, or a case/separator variant).
pub fn nearest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            let d = if norm(c) == norm(word) {
                0
            } else {
                distance(word, c)
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("name", "name"), 0);
        assert_eq!(distance("nmae", "name"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("hardwre", "hardware"), 1);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn nearest_picks_close_names_only() {
        let keys = ["name", "ip", "role", "hardware"];
        assert_eq!(nearest("hardwre", keys), Some("hardware"));
        assert_eq!(nearest("nmae", keys), Some("name"));
        assert_eq!(nearest("Hard_Ware", keys), Some("hardware"));
        assert_eq!(nearest("zzzzzzzz", keys), None);
    }
}
