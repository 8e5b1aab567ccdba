//! `piimg build`: one ready-to-flash image per node.

use anyhow::{Context, bail};
use clap::Args;
use indicatif::MultiProgress;
use piimg::card::{self, Card, FirstBoot, NodeSecrets, Os, RenderOptions, Templates};
use piimg::image::Image;
use piimg::inputs::{BaseId, Inputs};
use piimg::output::{blockmap, interrupt, write};
use piimg::pki::HaOptions;
use piimg::plan::{FirstBootAction, NodePlan};
use piimg::profile::{self, keys, secrets};
use piimg::progress::{OutputMode, Reporter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Arguments of `piimg build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Cluster profile: the global `--profile`, as discovered by `cli::run`.
    #[arg(skip)]
    pub profile: Option<PathBuf>,
    /// Build this node's image (repeat for several).
    #[arg(
        long = "node",
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub nodes: Vec<String>,
    /// Build every node of the profile (in parallel).
    #[arg(long)]
    pub all: bool,
    /// Base image (.img) [default: the newest cached official image, fetched if none].
    #[arg(long, value_name = "IMAGE")]
    pub base: Option<PathBuf>,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Also write NAME.img.xz (multi-threaded xz).
    #[arg(long)]
    pub xz: bool,
    /// Never use the network (cached base image, no GitHub key lookups).
    #[arg(long)]
    pub offline: bool,
    /// Start a new cluster: fresh secrets (the old ones are moved aside).
    #[arg(long)]
    pub new_cluster: bool,
    /// Also compute each whole image's SHA-256 (always done with --json).
    #[arg(long)]
    pub sha256: bool,
    /// Images built at the same time with --all [default: one per CPU].
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
}

/// One node's entry in the `--json` summary.
#[derive(Debug, Serialize)]
struct Summary {
    node: String,
    path: PathBuf,
    bmap: PathBuf,
    xz: Option<PathBuf>,
    sha256: Option<String>,
    release: String,
    first_boot: FirstBoot,
    size: u64,
    mapped_bytes: u64,
    copy: piimg::output::copy::CopyMethod,
    seconds: write::Timings,
}

/// Runs `piimg build`.
pub fn run(args: BuildArgs, out: Reporter) -> anyhow::Result<()> {
    interrupt::install();
    let profile_path = profile_path(args.profile.as_deref())?;
    let profile = profile::load(&profile_path)?;
    let findings = profile::validate(&profile);
    for w in &findings.warnings {
        out.warn(format!("{}: {w}", profile_path.display()));
    }
    if !findings.is_ok() {
        let list: Vec<String> = findings.errors.iter().map(|e| format!("  {e}")).collect();
        bail!(
            "{}: {} error(s); fix them first (`piimg validate` shows them all):\n{}",
            profile_path.display(),
            list.len(),
            list.join("\n")
        );
    }
    let wanted = select_nodes(&profile, &args)?;
    // Temp files killed runs left of any of these nodes' outputs go now, also of
    // outputs this run may not reach.
    for n in &wanted {
        for ext in ["img", "img.bmap", "img.xz"] {
            piimg::atomic::remove_stale_temps(&args.out.join(format!("{n}.{ext}")));
        }
    }
    let build_time = build_time()?;

    // The base is checked (sanity, release, first-boot mechanism) before anything is
    // created or built.
    let (base, base_sha, init_format) = base_image(&args, &out)?;
    let image = Image::open(&base).with_context(|| format!("base image {}", base.display()))?;
    piimg::image::sanity::check(&image)?;
    let release = image
        .root()
        .and_then(|r| r.release())
        .with_context(|| format!("detecting the OS of {}", base.display()))?;
    let os = Os {
        codename: release.codename.clone(),
        first_boot: match piimg::image::choose_first_boot(&base, &release, init_format.as_deref())?
        {
            piimg::image::FirstBoot::SystemdRun => FirstBoot::SystemdRun,
            piimg::image::FirstBoot::CloudInit => FirstBoot::CloudInit,
        },
    };
    let span = write::boot_span(&image)?;
    drop(image);
    let base_id = match &base_sha {
        Some(sha) => BaseId::Sha256(sha.clone()),
        None => BaseId::of_file(&base).with_context(|| format!("base image {}", base.display()))?,
    };

    // Concurrent first builds: one creates the secrets and the CA, the others wait
    // for it and use them.
    let held = secrets::lock(&profile_path, |lock| {
        out.info(format!(
            "another piimg run is setting up this cluster's secrets (holds {}); waiting for it",
            lock.display()
        ))
    })?;
    let mut cluster = secrets::ClusterSecrets::open_or_create(
        &profile_path,
        secrets::SecretsOptions {
            new_cluster: args.new_cluster,
        },
    )
    .with_context(|| format!("opening the secrets of {}", profile_path.display()))?;
    // The cluster CA lives in the secrets directory, so `--new-cluster` (which moves
    // that directory aside) also starts a fresh CA.
    let ca = piimg::pki::ClusterCa::open_or_create(cluster.dir(), &profile.cluster.name)
        .with_context(|| format!("the cluster CA in {}", cluster.dir().display()))?;
    drop(held);
    if let Some(old) = cluster.moved_aside() {
        out.info(format!(
            "--new-cluster: previous secrets moved to {}",
            old.display()
        ));
    }
    let plans = if args.offline {
        let keys = keys::resolve(&profile, keys::KeySources::Local)?;
        piimg::plan::plan_with(&profile, cluster.state(), keys)?
    } else {
        piimg::plan::plan(&profile, &cluster)?
    };
    let plans: Vec<NodePlan> = plans
        .into_iter()
        .filter(|p| wanted.contains(&p.name))
        .collect();

    out.info(format!(
        "base {} ({} {}), first boot via {}",
        base.display(),
        release.pretty_name,
        release.codename,
        match os.first_boot {
            FirstBoot::SystemdRun => "systemd.run hook",
            FirstBoot::CloudInit => "cloud-init",
        }
    ));

    let templates = match plans.first().and_then(|p| p.overlay_dir.as_deref()) {
        Some(dir) => Templates::with_overlay(dir)?,
        None => Templates::builtin(),
    };
    let addons = piimg::pki::manifests::Addons {
        cert_manager: profile.addons.cert_manager,
        monitoring: profile.addons.monitoring,
    };
    let base_name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut jobs = Vec::new();
    for plan in &plans {
        if plan.bootstrap && cluster.bootstrap_issued() && !first_bring_up(plan, &cluster) {
            out.warn(format!(
                "{}'s first card was issued on {}; this card joins the existing cluster. If that card never booted, build with --new-cluster",
                plan.name,
                cluster
                    .state()
                    .bootstrap_issued_at
                    .as_deref()
                    .unwrap_or("an earlier build (date not recorded)")
            ));
        }
        let ha = HaOptions {
            first_bring_up: first_bring_up(plan, &cluster),
            addons: addons.clone(),
            agent_token_secret: cluster.agent_token_secret().map(str::to_string),
            init_window_secs: profile.k3s.init_window_seconds,
            node_cleaner_days: profile.k3s.node_cleaner_days,
        };
        let nf = piimg::pki::files_for_node(plan, &ca, cluster.token_secret(), &ha)
            .with_context(|| format!("node {}: cluster PKI", plan.name))?;
        let node_secrets = NodeSecrets {
            token: nf.token,
            agent_token: nf.agent_token,
            node_password: Some(nf.node_password),
            files: nf.secret_files,
            root_files: nf.files,
            ha: nf.ha,
        };
        let card = card::render(
            plan,
            &node_secrets,
            &os,
            &templates,
            piimg::agent::AGENT_BINARY,
            RenderOptions { build_time },
        )
        .with_context(|| format!("node {}", plan.name))?;
        let inputs = Inputs::current(
            &profile,
            &plan.name,
            cluster.state(),
            base_id.to_string(),
            piimg::agent::AGENT_BINARY,
        );
        let manifest = manifest_json(&card, &release, &base_name, base_sha.as_deref(), inputs);
        jobs.push((plan.bootstrap, card, manifest));
    }

    let cache = piimg::fetch::Cache::default_dir()
        .ok()
        .map(|d| d.join("bmap"));
    out.info("mapping the base image (cached after the first build)");
    let base_map = blockmap::base_map(&base, &write::cuts(span), cache.as_deref())
        .with_context(|| format!("mapping {}", base.display()))?;
    let opts = write::WriteOptions {
        xz: args.xz,
        xz_threads: if args.all && jobs.len() > 1 { 1 } else { 0 },
        xz_preset: 6,
        reflink: true,
        sha256: args.sha256 || out.is_json(),
        base_map: Some(Arc::new(base_map)),
    };
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    let results = build_all(jobs, &base, &args.out, &opts, threads, &out, &mut cluster);

    let mut summaries = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(w) => summaries.push(Summary {
                node: w.node,
                path: w.path,
                bmap: w.bmap,
                xz: w.xz,
                sha256: w.sha256,
                release: release.codename.clone(),
                first_boot: os.first_boot,
                size: w.size,
                mapped_bytes: w.mapped_bytes,
                copy: w.copy,
                seconds: w.timings,
            }),
            Err((node, e)) => failed.push(format!("{node}: {e:#}")),
        }
    }
    if interrupt::interrupted() {
        bail!("interrupted: no new image was put in place for the unfinished nodes");
    }
    match out.mode() {
        // The run's one document: built images and, if any, the nodes that failed.
        OutputMode::Json if !failed.is_empty() => out.json(&serde_json::json!({
            "images": summaries,
            "failed": failed,
            "error": format!("{} of {} image(s) failed", failed.len(), failed.len() + summaries.len()),
        }))?,
        OutputMode::Json => out.json(&serde_json::json!({ "images": summaries }))?,
        OutputMode::Human => {
            for s in &summaries {
                println!(
                    "{:<16} {}  ({} MiB mapped, copy {:.1}s, card {:.2}s, bmap {:.1}s{})",
                    s.node,
                    s.path.display(),
                    s.mapped_bytes >> 20,
                    s.seconds.copy,
                    s.seconds.card,
                    s.seconds.bmap,
                    s.xz.as_ref()
                        .map(|x| format!(", {}", x.display()))
                        .unwrap_or_default()
                );
            }
        }
        OutputMode::Quiet => {}
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} image(s) failed:\n  {}",
            failed.len(),
            failed.len() + summaries.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

type JobResult = Result<write::Written, (String, anyhow::Error)>;

/// Writes every card's image, `threads` at a time; records each issued card.
fn build_all(
    jobs: Vec<(bool, Card, Vec<u8>)>,
    base: &Path,
    out_dir: &Path,
    opts: &write::WriteOptions,
    threads: usize,
    out: &Reporter,
    cluster: &mut secrets::ClusterSecrets,
) -> Vec<JobResult> {
    let multi = MultiProgress::new();
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results: Mutex<Vec<(usize, JobResult)>> = Mutex::new(Vec::new());
    let cluster = Mutex::new(cluster);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| {
                        if q.is_empty() {
                            None
                        } else {
                            Some(q.remove(0))
                        }
                    });
                    let Some((i, (bootstrap, card, manifest))) = next else {
                        break;
                    };
                    if interrupt::interrupted() {
                        break;
                    }
                    let bar = out.bytes(0, &card.node);
                    let bar = if out.mode() == OutputMode::Human {
                        multi.add(bar)
                    } else {
                        bar
                    };
                    let mut extra = BTreeMap::new();
                    extra.insert(piimg_contract::MANIFEST_FILE.to_string(), manifest);
                    let r = write::write_image(
                        base,
                        &card,
                        &extra,
                        out_dir,
                        opts,
                        &mut |phase, d, total| {
                            bar.set_length(total);
                            bar.set_position(d);
                            bar.set_message(format!("{} {phase}", card.node));
                        },
                    );
                    bar.finish_and_clear();
                    let r = match r {
                        Ok(w) => match cluster.lock() {
                            Ok(mut c) => c
                                .mark_issued(&card.node, bootstrap)
                                .map(|_| w)
                                .map_err(|e| (card.node.clone(), anyhow::Error::new(e))),
                            Err(_) => Err((
                                card.node.clone(),
                                anyhow::anyhow!("internal: lock poisoned"),
                            )),
                        },
                        Err(e) => Err((card.node.clone(), anyhow::Error::new(e))),
                    };
                    if let Ok(mut res) = results.lock() {
                        res.push((i, r));
                    }
                }
            });
        }
    });
    let mut res = results.into_inner().unwrap_or_default();
    res.sort_by_key(|(i, _)| *i);
    res.into_iter().map(|(_, r)| r).collect()
}

/// Whether `plan`'s card may initialise the cluster: only the bootstrap server's, and
/// only while the one record of issued cards (`ClusterSecrets::bootstrap_issued`, which
/// the plan was computed from) says no bootstrap card was issued yet. The plan also
/// lets the sole server of a single-server cluster re-initialise, as it has no peer
/// to join.
fn first_bring_up(plan: &NodePlan, cluster: &secrets::ClusterSecrets) -> bool {
    plan.bootstrap
        && matches!(plan.first_boot, FirstBootAction::InitCluster)
        && (!cluster.bootstrap_issued() || plan.servers.len() == 1)
}

/// `--profile`, else what [`profile::discover`] finds (`$PIIMG_PROFILE`,
/// `./piimg.toml`, the only `profiles/*.toml`).
pub(crate) fn profile_path(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(profile::discover::discover_here(arg)?)
}

fn select_nodes(profile: &profile::Profile, args: &BuildArgs) -> anyhow::Result<Vec<String>> {
    let known: Vec<String> = profile.nodes.iter().map(|n| n.name.clone()).collect();
    if args.all {
        return Ok(known);
    }
    let mut out = Vec::new();
    for n in &args.nodes {
        if !known.contains(n) {
            bail!(
                "--node {n}: no such node in {}; nodes are: {}",
                profile.path.display(),
                known.join(", ")
            );
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

/// SOURCE_DATE_EPOCH when set (reproducible builds), else now.
fn build_time() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970 (e.g. $(git log -1 --format=%ct))")
        }),
        _ => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

/// `--base`, or the cached official image (fetched unless `--offline`), with its
/// sha256 and the OS list's `init_format` when the cache knows them.
fn base_image(
    args: &BuildArgs,
    out: &Reporter,
) -> anyhow::Result<(PathBuf, Option<String>, Option<String>)> {
    if let Some(b) = &args.base {
        if !b.exists() {
            bail!(
                "--base {}: no such file (give a Raspberry Pi OS .img, or omit --base to use the cached official image)",
                b.display()
            );
        }
        return Ok((b.clone(), None, None));
    }
    let mut opts = piimg::fetch::FetchOptions::from_env()?;
    opts.offline = args.offline;
    let img = piimg::fetch::ensure_base(&opts, out)?;
    Ok((img.path, Some(img.sha256), img.init_format))
}

/// The card's `piimg/manifest.json`.
fn manifest_json(
    card: &Card,
    release: &piimg::image::Release,
    base_name: &str,
    base_sha: Option<&str>,
    inputs: Inputs,
) -> Vec<u8> {
    let release = if release.pretty_name.is_empty() {
        release.codename.clone()
    } else {
        format!("{} ({})", release.codename, release.pretty_name)
    };
    piimg::manifest::Manifest {
        manifest_version: piimg::manifest::MANIFEST_VERSION,
        profile: card.profile.clone(),
        cluster: card.cluster.clone(),
        node: card.node.clone(),
        piimg_version: env!("CARGO_PKG_VERSION").to_string(),
        built_at: piimg::manifest::rfc3339_utc(i64::try_from(card.build_time).unwrap_or(i64::MAX)),
        base_image: piimg::manifest::BaseImage {
            file: base_name.to_string(),
            sha256: base_sha.map(str::to_string),
        },
        release,
        template_hashes: card.template_hashes.clone(),
        inputs: Some(inputs),
    }
    .to_json()
    .into_bytes()
}
