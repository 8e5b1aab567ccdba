//! [`Report`] as text: one table of planned against live, then unexpected nodes,
//! etcd members, the VIP, the servers' APIs, and every problem.

use super::status::Report;
use piimg_contract::Role;
use std::fmt::Write;

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Server => "server",
        Role::Agent => "agent",
    }
}

/// `planned` when `live` equals it (or is unknown), else `planned → live`.
fn planned_vs(planned: &str, live: Option<&str>) -> String {
    match live {
        Some(l) if l != planned => {
            format!(
                "{} → {}",
                if planned.is_empty() { "-" } else { planned },
                if l.is_empty() { "?" } else { l }
            )
        }
        _ if planned.is_empty() => "-".to_string(),
        _ => planned.to_string(),
    }
}

/// Lays out rows under a header, columns two spaces apart.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count());
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {} · API via {}",
        r.cluster,
        r.api_via
            .as_deref()
            .unwrap_or("nothing: no server answered")
    );
    let header = ["NODE", "ROLE", "JOINED", "READY", "IP", "K3S", "BOARD"];
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|n| {
            let live_role = n.live_role.map(role);
            vec![
                n.name.clone(),
                planned_vs(role(n.role), live_role),
                yes_no(n.joined).to_string(),
                if n.joined == Some(true) {
                    yes_no(n.ready).to_string()
                } else {
                    "-".to_string()
                },
                planned_vs(
                    &n.ip.map_or_else(|| "dhcp".to_string(), |ip| ip.to_string()),
                    n.reported_ip.as_deref(),
                ),
                planned_vs(&n.version, n.running_version.as_deref()),
                if n.label_problems.is_empty() {
                    n.board.clone()
                } else {
                    format!("{} (labels differ)", n.board)
                },
            ]
        })
        .collect();
    table(&mut out, &header, &rows);
    if !r.unexpected.is_empty() {
        let _ = writeln!(out, "\nnot in the profile:");
        for u in &r.unexpected {
            let _ = writeln!(
                out,
                "  {}  {}  {}  {}",
                u.name,
                u.ip.as_deref().unwrap_or("?"),
                u.version,
                if u.ready { "Ready" } else { "not Ready" }
            );
        }
    }
    match &r.etcd.error {
        Some(e) => {
            let _ = writeln!(out, "\netcd members: unknown ({e})");
        }
        None => {
            let _ = writeln!(
                out,
                "\netcd members (via {}):",
                r.etcd.via.as_deref().unwrap_or("?")
            );
            for m in &r.etcd.members {
                let name = if m.name.is_empty() {
                    "(unnamed)"
                } else {
                    &m.name
                };
                let _ = writeln!(
                    out,
                    "  {:<16} {}  peer {}{}{}",
                    m.id,
                    name,
                    m.peer.as_deref().unwrap_or("?"),
                    if m.learner { "  learner" } else { "" },
                    match &m.problem {
                        Some(p) => format!("  ← {p}"),
                        None => String::new(),
                    }
                );
            }
        }
    }
    if let Some(v) = &r.vip {
        let _ = writeln!(
            out,
            "\nVIP {}: {}, held by {}",
            v.ip,
            match &v.error {
                None => "answers".to_string(),
                Some(e) => format!("does not answer ({e})"),
            },
            v.holder.as_deref().unwrap_or("nobody")
        );
    }
    let _ = writeln!(out, "\nservers' APIs:");
    for s in &r.servers {
        let _ = writeln!(
            out,
            "  {}  {}  {}",
            s.name,
            s.url,
            match (&s.version, &s.error) {
                (Some(v), _) => v.clone(),
                (None, Some(e)) => format!("no: {e}"),
                (None, None) => "?".to_string(),
            }
        );
    }
    if r.matches {
        let _ = writeln!(out, "\nthe cluster matches the plan");
    } else {
        let _ = writeln!(out, "\n{} difference(s) from the plan:", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}
