//! `piimg init`: writes a starter profile (never over an existing file).

use super::validate::ProfileArg;
use anyhow::Context;
use clap::Args;
use piimg::profile::{self, hardware, net::Ipv4Cidr};
use piimg::progress::Reporter;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// Default k3s release pinned by new profiles.
const DEFAULT_K3S_VERSION: &str = "v1.31.4+k3s1";

/// Arguments of `piimg init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the profile.
    #[command(flatten)]
    pub profile: ProfileArg,
    /// What to put in it (boxed: keeps the `Command` enum small).
    #[command(flatten)]
    pub starter: Box<StarterArgs>,
}

/// The starter profile's settings.
#[derive(Debug, Args)]
pub struct StarterArgs {
    /// Cluster name (default: the profile's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// DNS domain for the nodes.
    #[arg(long)]
    pub domain: Option<String>,
    /// The LAN.
    #[arg(long, default_value = "192.168.1.0/24")]
    pub cidr: Ipv4Cidr,
    /// Default gateway (default: the first address of the LAN).
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// DNS resolvers (default: the gateway, then 1.1.1.1).
    #[arg(long, value_delimiter = ',')]
    pub dns: Vec<IpAddr>,
    /// Number of servers (control plane; 1, 3 or 5).
    #[arg(long, default_value_t = 3)]
    pub servers: u8,
    /// Number of agents (workers).
    #[arg(long, default_value_t = 0)]
    pub agents: u8,
    /// Address of the first node; the others follow it.
    #[arg(long)]
    pub first_ip: Option<Ipv4Addr>,
    /// Hardware class of the servers.
    #[arg(long, default_value = "pi5-8gb")]
    pub server_hardware: String,
    /// Hardware class of the agents.
    #[arg(long, default_value = "pi5-8gb")]
    pub agent_hardware: String,
    /// Control-plane virtual IP.
    #[arg(long)]
    pub vip: Option<Ipv4Addr>,
    /// Pinned k3s release.
    #[arg(long, default_value = DEFAULT_K3S_VERSION)]
    pub k3s_version: String,
    /// Admin user name.
    #[arg(long, default_value = "pi")]
    pub admin_user: String,
    /// SSH public-key file (repeatable; default: the first of ~/.ssh/id_{ed25519,ecdsa,rsa}.pub that exists).
    #[arg(long)]
    pub ssh_key_file: Vec<String>,
    /// GitHub user whose public keys are fetched at build time (repeatable).
    #[arg(long)]
    pub github_user: Vec<String>,
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list<T: ToString>(items: &[T]) -> String {
    let q: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", q.join(", "))
}

/// The starter profile's text.
fn render(args: &StarterArgs, name: &str, key_files: &[String]) -> anyhow::Result<String> {
    let net = args.cidr;
    let base = u32::from(net.network());
    let gateway = args.gateway.unwrap_or(Ipv4Addr::from(base + 1));
    let dns: Vec<IpAddr> = if args.dns.is_empty() {
        vec![IpAddr::V4(gateway), IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1))]
    } else {
        args.dns.clone()
    };
    let first = u32::from(args.first_ip.unwrap_or(Ipv4Addr::from(base + 10)));
    let mut t = String::new();
    writeln!(
        t,
        "# Cluster profile written by `piimg init`. Check it with `piimg validate`,"
    )?;
    writeln!(t, "# see what each card will do with `piimg plan`.")?;
    writeln!(t, "\n[cluster]\nname = {}", quote(name))?;
    if let Some(d) = &args.domain {
        writeln!(t, "domain = {}", quote(d))?;
    }
    writeln!(t, "\n[network]\ncidr = {}", quote(&net.to_string()))?;
    writeln!(t, "gateway = {}", quote(&gateway.to_string()))?;
    writeln!(t, "dns = {}", list(&dns))?;
    writeln!(t, "interface = \"eth0\"")?;
    writeln!(t, "\n[k3s]\nversion = {}", quote(&args.k3s_version))?;
    match args.vip {
        Some(v) => writeln!(t, "vip = {}", quote(&v.to_string()))?,
        None => writeln!(
            t,
            "# vip = \"a free address of the LAN\"  # control-plane virtual IP"
        )?,
    }
    writeln!(
        t,
        "etcd_snapshot_schedule = \"0 */6 * * *\"\netcd_snapshot_retention = 10"
    )?;
    writeln!(
        t,
        "\n[access]\nadmin_user = {}\npassword_login = false",
        quote(&args.admin_user)
    )?;
    writeln!(t, "ssh_key_files = {}", list(key_files))?;
    writeln!(t, "github_users = {}", list(&args.github_user))?;
    writeln!(t, "\n[hardware]\npi5_4k_pages = true")?;
    let total = u32::from(args.servers) + u32::from(args.agents);
    for i in 0..total {
        let (role, n, hw) = if i < u32::from(args.servers) {
            ("server", i + 1, &args.server_hardware)
        } else {
            (
                "agent",
                i + 1 - u32::from(args.servers),
                &args.agent_hardware,
            )
        };
        let ip = Ipv4Addr::from(
            first
                .checked_add(i)
                .context("node addresses run past 255.255.255.255")?,
        );
        writeln!(
            t,
            "\n[[nodes]]\nname = {}",
            quote(&format!("{name}-{role}-{n}"))
        )?;
        writeln!(
            t,
            "ip = {}\nrole = \"{role}\"\nhardware = {}",
            quote(&ip.to_string()),
            quote(hw)
        )?;
    }
    Ok(t)
}

/// Writes `text` to `dest` atomically, failing if `dest` exists.
fn write_no_clobber(dest: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".piimg-init.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(dest).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; not overwriting it (choose another --profile)",
                dest.display()
            )
        } else {
            anyhow::Error::new(e.error).context(format!("writing {}", dest.display()))
        }
    })?;
    piimg::atomic::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))
}

/// Runs `piimg init`.
pub fn run(init: InitArgs, out: Reporter) -> anyhow::Result<()> {
    let dest = &init.profile.profile;
    let args = &*init.starter;
    if dest.exists() {
        anyhow::bail!(
            "{} already exists; not overwriting it (choose another --profile)",
            dest.display()
        );
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => dest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cluster".into()),
    };
    let mut key_files = args.ssh_key_file.clone();
    if key_files.is_empty() && args.github_user.is_empty() {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        if let Some(found) = ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
            .iter()
            .find(|f| {
                home.as_ref()
                    .is_some_and(|h| h.join(".ssh").join(f).is_file())
            })
        {
            key_files.push(format!("~/.ssh/{found}"));
        }
    }
    for (flag, class) in [
        ("--server-hardware", &args.server_hardware),
        ("--agent-hardware", &args.agent_hardware),
    ] {
        if hardware::class(class).is_none() {
            let known: Vec<&str> = hardware::class_ids().collect();
            anyhow::bail!(
                "{flag}: unknown hardware class \"{class}\" (known: {})",
                known.join(", ")
            );
        }
    }
    let text = render(args, &name, &key_files)?;
    // Check what we are about to write, the way `validate` will.
    let mut parsed =
        profile::parse(&text, dest).context("internal: the starter profile does not parse")?;
    parsed.path = dest.clone();
    let findings = profile::validate(&parsed);
    let (key_errors, errors): (Vec<_>, Vec<_>) = findings
        .errors
        .iter()
        .partition(|e| e.field.starts_with("access"));
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::bail!(
            "these options make an invalid profile:\n  {}",
            list.join("\n  ")
        );
    }
    write_no_clobber(dest, &text)?;
    // A key file that cannot be read is only a warning for `validate`; build refuses it.
    let key_file_warnings = findings
        .warnings
        .iter()
        .filter(|w| w.field.starts_with("access.ssh_key_files["));
    for e in key_errors.into_iter().chain(key_file_warnings) {
        out.warn(format!("{e} (edit {} before building)", dest.display()));
    }
    out.info(format!(
        "wrote {} ({} servers, {} agents); next: piimg validate --profile {}",
        dest.display(),
        args.servers,
        args.agents,
        dest.display()
    ));
    if out.is_json() {
        out.json(&serde_json::json!({ "profile": dest, "cluster": name }))?;
    }
    Ok(())
}
