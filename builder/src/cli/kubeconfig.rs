//! `piimg kubeconfig`: an admin kubeconfig for the running cluster, from the
//! secrets directory (no SSH): a short-lived client certificate signed by the
//! cluster's client CA, the server CA, and the VIP or the first server that answers.

use super::validate::ProfileArg;
use anyhow::Context;
use clap::Args;
use piimg::cluster::access::ClusterAccess;
use piimg::cluster::api::ApiClient;
use piimg::cluster::kubeconfig::{
    DEFAULT_VALID_DAYS, Kubeconfig, MAX_VALID_DAYS, issue_admin, write_private,
};
use piimg::cluster::{ClusterError, endpoints, live, merge};
use piimg::progress::{OutputMode, Reporter};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Where and how patiently to reach the servers (shared with `piimg status`).
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Port of the servers' API: k3s's `https-listen-port` [default: the profile's
    /// `https-listen-port` in k3s.server_args, else 6443].
    #[arg(long, env = "PIIMG_API_PORT", value_name = "PORT")]
    pub api_port: Option<u16>,
    /// Seconds each request to a server may take before it counts as not answering.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300), value_name = "SECS")]
    pub timeout: u64,
}

impl AccessArgs {
    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

/// Arguments of `piimg kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The cluster's profile.
    #[command(flatten)]
    pub profile: ProfileArg,
    /// How to reach the servers.
    #[command(flatten)]
    pub access: AccessArgs,
    /// Write the kubeconfig here (mode 0600; `-` prints it) [default: `kubeconfig` in
    /// the profile's secrets directory, unless --merge is given].
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Days the admin certificate stays valid (it cannot be revoked: keep it short).
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_VALID_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VALID_DAYS)))]
    pub valid: u32,
    /// Add the context to ~/.kube/config (the file $KUBECONFIG selects, as kubectl
    /// does), replacing only entries of the same name.
    #[arg(long)]
    pub merge: bool,
    /// Name of the context, cluster and user (`NAME-admin`) entries [default: the
    /// cluster's name].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Server URL to write instead of the VIP or the first server that answers
    /// (e.g. a DNS name in the API certificate's tls_san).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

#[derive(Debug, Serialize)]
struct Doc {
    profile: PathBuf,
    context: String,
    server: String,
    /// How the server was chosen: `--server`, `vip` or the server's node name.
    server_from: String,
    user: String,
    not_before: String,
    not_after: String,
    valid_days: u32,
    out: Option<PathBuf>,
    merged_into: Option<PathBuf>,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    piimg::date::rfc3339_utc(t.unix_timestamp())
}

/// Runs `piimg kubeconfig`.
pub fn run(args: KubeconfigArgs, out: Reporter) -> anyhow::Result<()> {
    let path = &args.profile.profile;
    let p = args.profile.load_valid(&out)?;
    let stdout = args.out.as_deref() == Some(std::path::Path::new("-"));
    if stdout && out.is_json() {
        anyhow::bail!("--out - prints the kubeconfig itself, which --json cannot; name a file");
    }
    let access = ClusterAccess::open(path)?;
    let facts = &piimg::upstream::facts().k3s;
    let cert = issue_admin(
        &access.ca,
        &facts.admin_user,
        time::Duration::days(i64::from(args.valid)),
    )?;
    let port = endpoints::api_port(&p, args.access.api_port)?;
    let (server, server_from) = match (&args.server, endpoints::vip(&p, port)) {
        (Some(url), _) => {
            if !url.starts_with("https://") {
                anyhow::bail!(
                    "--server {url}: expected an https:// URL (k3s serves its API over TLS only)"
                );
            }
            (
                url.trim_end_matches('/').to_string(),
                "--server".to_string(),
            )
        }
        (None, Some(vip)) => {
            // The VIP is the stable address even while it is down; say so, though.
            let client = ApiClient::new(&access.ca, &cert.identity, None, args.access.timeout())?;
            if let Some(Err(e)) = live::probe(&client, std::slice::from_ref(&vip))
                .into_iter()
                .next()
                .map(|pr| pr.result)
            {
                out.warn(format!(
                    "the VIP {} does not answer yet ({e}); the kubeconfig points at it anyway (kube-vip runs once the servers are up)",
                    vip.url()
                ));
            }
            (vip.url(), "vip".to_string())
        }
        (None, None) => {
            let client = ApiClient::new(&access.ca, &cert.identity, None, args.access.timeout())?;
            let probes = live::probe(&client, &endpoints::servers(&p, port));
            match probes.iter().find(|pr| pr.result.is_ok()) {
                Some(pr) => (pr.endpoint.url(), pr.endpoint.name.clone()),
                None => {
                    let reasons = probes
                        .iter()
                        .map(|pr| {
                            format!(
                                "{} ({}): {}",
                                pr.endpoint.name,
                                pr.endpoint.url(),
                                pr.result
                                    .as_ref()
                                    .err()
                                    .map(ToString::to_string)
                                    .unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n  ");
                    return Err(ClusterError::NoServer { reasons }.into());
                }
            }
        }
    };
    let context = args
        .context
        .clone()
        .unwrap_or_else(|| p.cluster.name.clone());
    let kc = Kubeconfig::single(&context, &server, access.ca.server_ca_bundle(), &cert);
    let text = kc.to_yaml()?;
    let file = match (&args.out, args.merge) {
        (Some(f), _) if !stdout => Some(f.clone()),
        (None, false) => Some(access.dir.join("kubeconfig")),
        _ => None,
    };
    if let Some(f) = &file {
        write_private(f, &text).with_context(|| format!("writing {}", f.display()))?;
    }
    let merged_into = if args.merge {
        let target = merge::target(
            std::env::var_os("KUBECONFIG").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )?;
        merge::merge_into(&target, &kc)?;
        Some(target)
    } else {
        None
    };
    if stdout {
        print!("{text}");
    }
    let doc = Doc {
        profile: path.clone(),
        context: context.clone(),
        server: server.clone(),
        server_from,
        user: cert.user.clone(),
        not_before: rfc3339(cert.not_before),
        not_after: rfc3339(cert.not_after),
        valid_days: args.valid,
        out: file.clone(),
        merged_into: merged_into.clone(),
    };
    match out.mode() {
        OutputMode::Json => out.json(&doc).context("writing JSON")?,
        OutputMode::Quiet => {}
        OutputMode::Human => {
            // With `--out -` stdout is the kubeconfig: the notes go to stderr.
            let mut notes = format!(
                "admin kubeconfig for cluster {} → {server} (user {}, group {}), valid until {} ({} day(s); issue a new one with `piimg kubeconfig`)\n",
                p.cluster.name, cert.user, facts.admin_group, doc.not_after, args.valid
            );
            if let Some(f) = &file {
                notes.push_str(&format!(
                    "wrote {} (0600). Use it:\n  export KUBECONFIG={}\n  kubectl get nodes\n",
                    f.display(),
                    f.display()
                ));
            }
            if let Some(t) = &merged_into {
                notes.push_str(&format!(
                    "added context {context} to {}. Use it:\n  kubectl --context {context} get nodes\n",
                    t.display()
                ));
            }
            if stdout {
                eprint!("{notes}");
            } else {
                print!("{notes}");
            }
        }
    }
    Ok(())
}
