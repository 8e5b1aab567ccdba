//! Tables that fit the terminal: the full table when it fits (or with `--wide`),
//! else the leading columns as a table and the long ones as wrapped, indented
//! lines under each row.

use std::io::IsTerminal;

/// The width to fit: `$COLUMNS` when set, else the terminal's (stdout's, then
/// stderr's), else none — a pipe or file gets the full table, as with `--wide`.
pub fn width(wide: bool) -> Option<usize> {
    if wide {
        return None;
    }
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    [libc::STDOUT_FILENO, libc::STDERR_FILENO]
        .into_iter()
        .find_map(terminal_columns)
        .filter(|_| std::io::stdout().is_terminal())
}

/// TIOCGWINSZ's column count of `fd`, when it is a terminal that knows it.
fn terminal_columns(fd: libc::c_int) -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// `text` split at `sep` into lines no wider than `width` (a part longer than the
/// width gets a line of its own and is word-wrapped).
pub fn wrap_parts(text: &str, sep: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return text.to_string();
    };
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for part in text.split(sep) {
        let joined = if cur.is_empty() {
            part.to_string()
        } else {
            format!("{cur}{sep}{part}")
        };
        if joined.chars().count() <= width || cur.is_empty() {
            cur = joined;
        } else {
            lines.push(std::mem::take(&mut cur));
            cur = part.to_string();
        }
    }
    lines.push(cur);
    lines
        .iter()
        .flat_map(|l| wrap_words(l, width, "", "  "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Word-wraps `text` to `width` columns: the first line after `first`, the others
/// after `rest`. A word longer than a line stays whole.
pub fn wrap_words(text: &str, width: usize, first: &str, rest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let add = if empty { 0 } else { 1 } + word.chars().count();
        if !empty && cur.chars().count() + add > width {
            lines.push(std::mem::take(&mut cur));
            cur = rest.to_string();
            empty = true;
        }
        if !empty {
            cur.push(' ');
        }
        cur.push_str(word);
        empty = false;
    }
    lines.push(cur);
    lines
}

/// Renders `rows` under `header`. When the whole table is wider than `width`,
/// the first `keep` columns stay a table and each other column becomes an
/// indented `header: value` line under its row, wrapped to `width`.
pub fn render<const N: usize>(
    header: [&str; N],
    rows: &[[String; N]],
    keep: usize,
    width: Option<usize>,
) -> String {
    let widths = column_widths(header, rows);
    let full: usize = widths.iter().sum::<usize>() + 2 * N.saturating_sub(1);
    match width {
        Some(w) if full > w && keep < N => {
            let mut out = table(&header[..keep], rows.iter().map(|r| &r[..keep]), &widths);
            let mut lines = out.lines().map(str::to_string).collect::<Vec<_>>();
            // Row i's table line is lines[i + 1]; add its detail lines after it.
            let mut with_details = vec![lines.remove(0)];
            for (row, line) in rows.iter().zip(lines) {
                with_details.push(line);
                for (h, cell) in header.iter().zip(row).skip(keep) {
                    let label = format!("    {}: ", h.to_lowercase());
                    let indent = " ".repeat(label.chars().count());
                    with_details.extend(wrap_words(cell, w, &label, &indent));
                }
            }
            out = with_details.join("\n");
            out.push('\n');
            out
        }
        _ => table(&header, rows.iter().map(|r| &r[..]), &widths),
    }
}

fn column_widths<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> [usize; N] {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

fn table<'a, S: AsRef<str> + 'a>(
    header: &[&str],
    rows: impl Iterator<Item = &'a [S]>,
    widths: &[usize],
) -> String {
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        format!("{}\n", s.trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(AsRef::as_ref).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<[String; 3]> {
        vec![[
            "node-1".into(),
            "server".into(),
            "join as server via 10.0.0.2, 10.0.0.3; removes its stale etcd member first".into(),
        ]]
    }

    #[test]
    fn fits_whole_or_moves_long_columns_under_the_row() {
        let wide = render(["NODE", "ROLE", "FIRST BOOT"], &rows(), 2, None);
        assert_eq!(wide.lines().count(), 2);
        assert!(wide.lines().nth(1).unwrap().ends_with("member first"));
        let narrow = render(["NODE", "ROLE", "FIRST BOOT"], &rows(), 2, Some(40));
        let lines: Vec<&str> = narrow.lines().collect();
        assert_eq!(lines[0], "NODE    ROLE");
        assert_eq!(lines[1], "node-1  server");
        assert!(
            lines[2].starts_with("    first boot: join as server"),
            "{narrow}"
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 40), "{narrow}");
        // The wrapped text is the cell's text, word for word.
        let back: Vec<&str> = lines[2..]
            .iter()
            .flat_map(|l| l.split_whitespace())
            .skip(2)
            .collect();
        assert_eq!(back.join(" "), rows()[0][2]);
    }

    #[test]
    fn header_parts_wrap_at_their_separator() {
        let t = wrap_parts("aaaa · bbbb · cccc", " · ", Some(11));
        assert_eq!(t, "aaaa · bbbb\ncccc");
        assert_eq!(wrap_parts("aaaa · bbbb", " · ", None), "aaaa · bbbb");
    }
}
