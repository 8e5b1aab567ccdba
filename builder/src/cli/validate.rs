//! `piimg validate`.

use anyhow::Context;
use clap::Args;
use piimg::profile::keys::{self, KeySources};
use piimg::profile::{self, Finding, Findings, Profile};
use piimg::progress::{OutputMode, Reporter};
use serde::Serialize;
use std::path::PathBuf;

/// The profile a subcommand reads (or, for `init`, writes): chosen once from the
/// global `--profile`/`$PIIMG_PROFILE` by [`piimg::profile::discover`] in `cli::run`.
#[derive(Debug, Clone, Args)]
pub struct ProfileArg {
    /// The profile's path.
    #[arg(skip)]
    pub profile: PathBuf,
}

impl ProfileArg {
    /// Loads the profile (syntax and types only; see [`profile::validate`]).
    pub fn load(&self) -> anyhow::Result<Profile> {
        Ok(profile::load(&self.profile)?)
    }

    /// Loads the profile and refuses one [`profile::validate`] finds errors in, after
    /// printing every finding (commands that act on the cluster).
    pub fn load_valid(&self, out: &Reporter) -> anyhow::Result<Profile> {
        let p = self.load()?;
        let findings = profile::validate(&p);
        if !findings.is_ok() {
            print_findings(&findings, out);
            anyhow::bail!(
                "{} has {} error(s)",
                self.profile.display(),
                findings.errors.len()
            );
        }
        Ok(p)
    }
}

/// Arguments of `piimg validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The profile to check.
    #[command(flatten)]
    pub profile: ProfileArg,
    /// Also resolve every SSH key source now, fetching GitHub users' keys.
    #[arg(long)]
    pub fetch_keys: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    profile: &'a std::path::Path,
    ok: bool,
    nodes: usize,
    servers: usize,
    /// Keys resolved with `--fetch-keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    ssh_keys: Option<usize>,
    #[serde(flatten)]
    findings: &'a Findings,
}

/// Prints warnings (and errors) the way `validate` and `plan` both do.
pub fn print_findings(findings: &Findings, out: &Reporter) {
    for w in &findings.warnings {
        out.warn(w.to_string());
    }
    for e in &findings.errors {
        eprintln!("error: {e}");
    }
}

/// Runs `piimg validate`.
pub fn run(args: ValidateArgs, out: Reporter) -> anyhow::Result<()> {
    let path = &args.profile.profile;
    let p = args.profile.load()?;
    let mut findings = profile::validate(&p);
    let mut ssh_keys = None;
    if args.fetch_keys && findings.is_ok() {
        // A key file that cannot be read is already a warning.
        match keys::resolve_readable(&p, KeySources::All) {
            Ok(k) => ssh_keys = Some(k.len()),
            Err(e) => findings.errors.push(Finding {
                field: "access".to_string(),
                message: e.to_string(),
            }),
        }
    }
    let report = Report {
        profile: path,
        ok: findings.is_ok(),
        nodes: p.nodes.len(),
        servers: p.servers().count(),
        ssh_keys,
        findings: &findings,
    };
    if out.mode() == OutputMode::Json {
        out.json(&report).context("writing JSON")?;
        if !findings.is_ok() {
            // The JSON document above is the whole answer; only the exit code remains.
            std::process::exit(1);
        }
        return Ok(());
    }
    print_findings(&findings, &out);
    if !findings.is_ok() {
        anyhow::bail!("{} has {} error(s)", path.display(), findings.errors.len());
    }
    if out.mode() == OutputMode::Human {
        println!(
            "{}: ok — cluster {}, {} nodes ({} servers), {} warning(s)",
            path.display(),
            p.cluster.name,
            report.nodes,
            report.servers,
            findings.warnings.len()
        );
        if let Some(n) = ssh_keys {
            println!("{n} SSH key(s) resolved");
        }
    }
    Ok(())
}
