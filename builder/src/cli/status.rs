//! `piimg status`: the live cluster against the profile, without SSH; exit code 0
//! only when it matches the plan. `--watch` redraws until it does.

use super::kubeconfig::AccessArgs;
use super::validate::ProfileArg;
use anyhow::Context;
use clap::Args;
use piimg::cluster::access::ClusterAccess;
use piimg::cluster::api::ApiClient;
use piimg::cluster::kubeconfig::issue_admin;
use piimg::cluster::{endpoints, live, report, status};
use piimg::plan;
use piimg::profile::secrets;
use piimg::progress::{OutputMode, Reporter};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Arguments of `piimg status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cluster's profile.
    #[command(flatten)]
    pub profile: ProfileArg,
    /// How to reach the servers.
    #[command(flatten)]
    pub access: AccessArgs,
    /// Ask again every --interval seconds and redraw, until the cluster matches the
    /// plan (exit 0) or you stop it (Ctrl-C). With --json, one JSON line per round.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between two rounds of --watch.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600), value_name = "SECS")]
    pub interval: u64,
}

/// Validity of the in-memory admin certificate status uses: never written anywhere.
const STATUS_CERT_VALIDITY: time::Duration = time::Duration::hours(1);

/// Runs `piimg status`.
pub fn run(args: StatusArgs, out: Reporter) -> anyhow::Result<()> {
    let path = &args.profile.profile;
    let p = args.profile.load_valid(&out)?;
    let access = ClusterAccess::open(path)?;
    let state = secrets::peek_state(path)?.unwrap_or_default();
    // SSH keys play no part in the comparison: none are read.
    let plans = plan::plan_with(&p, &state, Vec::new())?;
    let port = endpoints::api_port(&p, args.access.api_port)?;
    let servers = endpoints::servers(&p, port);
    let vip = endpoints::vip(&p, port);
    let facts = &piimg::upstream::facts().k3s;
    let redraw = args.watch && out.mode() == OutputMode::Human && std::io::stdout().is_terminal();
    loop {
        // A fresh certificate per round: a long --watch never outlives it.
        let cert = issue_admin(&access.ca, &facts.admin_user, STATUS_CERT_VALIDITY)?;
        let client = ApiClient::new(
            &access.ca,
            &cert.identity,
            access.token_secret.clone(),
            args.access.timeout(),
        )?;
        let live = live::gather(&client, vip.as_ref(), &servers);
        let rep = status::compare(&p.cluster.name, &plans, &live, p.k3s.vip);
        match out.mode() {
            OutputMode::Json if args.watch => {
                println!("{}", serde_json::to_string(&rep).context("writing JSON")?);
            }
            OutputMode::Json => out.json(&rep).context("writing JSON")?,
            OutputMode::Quiet => {}
            OutputMode::Human => {
                let mut text = String::new();
                if redraw {
                    // Home and clear: the table is redrawn in place.
                    text.push_str("\x1b[H\x1b[2J");
                }
                if args.watch {
                    let now = time::OffsetDateTime::now_utc();
                    text.push_str(&format!(
                        "piimg status --watch · {:02}:{:02}:{:02} UTC · every {} s until it matches (Ctrl-C stops)\n\n",
                        now.hour(),
                        now.minute(),
                        now.second(),
                        args.interval
                    ));
                }
                text.push_str(&report::render(&rep));
                if args.watch && !redraw && !rep.matches {
                    text.push('\n');
                }
                print!("{text}");
            }
        }
        std::io::stdout().flush().context("writing the report")?;
        if rep.matches {
            return Ok(());
        }
        if !args.watch {
            // The report above is the answer; only the exit code remains.
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_secs(args.interval));
    }
}
