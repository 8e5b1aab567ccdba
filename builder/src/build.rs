//! The whole build of node images, as a library call: [`build`] takes a
//! [`BuildRequest`] (what `piimg build` and `piimg flash --node` ask for) and returns a
//! [`BuildReport`]; the CLI only parses, calls and prints.
//!
//! In order: validate the profile, check the base (sanity, release, first-boot
//! mechanism), open or create the cluster secrets and CA, plan, render each node's
//! card with its PKI files and manifest, map the base once, write the images a few at
//! a time, and record each issued card in the cluster state.

// A build fails at most once per node: the size of its error does not matter, and
// boxing every cause would only hide which one it is.
#![allow(clippy::result_large_err)]

use crate::card::{self, Card, FirstBoot, NodeHa, NodeSecrets, Os, RenderOptions, Templates};
use crate::image::{Image, ImageError, Release};
use crate::inputs::{BaseId, Inputs};
use crate::interrupt;
use crate::output::blockmap::{self, BlockMapError};
use crate::output::write;
use crate::pki::{ClusterCa, HaOptions, PkiError};
use crate::plan::{NodePlan, PlanError};
use crate::profile::keys::{self, KeyError};
use crate::profile::secrets::{self, ClusterSecrets, ClusterState, SecretsError};
use crate::profile::{self, Profile, ProfileError};
use crate::progress::{OutputMode, Reporter};
use indicatif::MultiProgress;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which nodes of the profile to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// Every node, in parallel.
    All,
    /// These nodes (repeats are built once).
    Named(Vec<String>),
}

/// What to build and how; like [`crate::fetch::FetchOptions`] for a fetch.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The cluster profile.
    pub profile: PathBuf,
    /// Which of its nodes.
    pub nodes: Nodes,
    /// The base image; `None`: the newest cached official image, fetched if none.
    pub base: Option<PathBuf>,
    /// Where the images go.
    pub out_dir: PathBuf,
    /// Also write `NAME.img.xz`.
    pub xz: bool,
    /// Never use the network (cached base image, no GitHub key lookups).
    pub offline: bool,
    /// Start a new cluster: fresh secrets, the old ones moved aside.
    pub new_cluster: bool,
    /// Restore an existing cluster whose servers were all lost: the bootstrap
    /// server's card may initialise it again (same secrets and CA, after its init
    /// window), so an etcd snapshot can be restored onto it.
    pub restore: bool,
    /// Compute each whole image's SHA-256.
    pub sha256: bool,
    /// Images written at the same time; `None`: one per CPU.
    pub jobs: Option<usize>,
}

impl BuildRequest {
    /// A request for `nodes` of `profile` with the defaults of `piimg build`: the
    /// cached base, output in `out/`, online, no xz, no whole-image SHA-256.
    pub fn new(profile: PathBuf, nodes: Nodes) -> Self {
        Self {
            profile,
            nodes,
            base: None,
            out_dir: PathBuf::from("out"),
            xz: false,
            offline: false,
            new_cluster: false,
            restore: false,
            sha256: false,
            jobs: None,
        }
    }
}

/// One image put in place (the `images` entries of `piimg build --json`).
#[derive(Debug, Serialize)]
pub struct BuiltImage {
    /// The files written and how.
    #[serde(flatten)]
    pub written: write::Written,
    /// The base's Debian codename.
    pub release: String,
    /// The first-boot mechanism the card uses.
    pub first_boot: FirstBoot,
}

/// A node whose image could not be written.
#[derive(Debug)]
pub struct NodeFailure {
    /// Node name.
    pub node: String,
    /// Why.
    pub error: BuildError,
}

/// What [`build`] did.
#[derive(Debug)]
pub struct BuildReport {
    /// The images put in place, in request order.
    pub images: Vec<BuiltImage>,
    /// The nodes whose image failed.
    pub failures: Vec<NodeFailure>,
}

impl BuildReport {
    /// `Err` naming every failed node when any image failed.
    pub fn check(&self) -> Result<(), BuildError> {
        if self.failures.is_empty() {
            return Ok(());
        }
        Err(BuildError::Failed {
            total: self.failures.len() + self.images.len(),
            failures: self
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.node, crate::error_text::chain(&f.error)))
                .collect(),
        })
    }
}

/// Why a build stopped (or, in [`NodeFailure`], one node's image failed).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The profile could not be read.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The profile has validation errors.
    #[error(
        "{}: {} error(s); fix them first (`piimg validate` shows them all):\n{}",
        .profile.display(),
        .errors.len(),
        .errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
    )]
    Invalid {
        /// The profile.
        profile: PathBuf,
        /// One line per error.
        errors: Vec<String>,
    },
    /// A requested node is not in the profile.
    #[error("--node {node}: no such node in {}; nodes are: {}", .profile.display(), .known.join(", "))]
    UnknownNode {
        /// The node asked for.
        node: String,
        /// The profile.
        profile: PathBuf,
        /// Its nodes.
        known: Vec<String>,
    },
    /// `SOURCE_DATE_EPOCH` is set but not a number.
    #[error(
        "SOURCE_DATE_EPOCH={value:?} is not a number of seconds since 1970 (e.g. $(git log -1 --format=%ct))"
    )]
    SourceDateEpoch {
        /// Its value.
        value: String,
        /// The parse error.
        #[source]
        source: std::num::ParseIntError,
    },
    /// The base image given does not exist.
    #[error(
        "--base {}: no such file (give a Raspberry Pi OS .img, or omit --base to use the cached official image)",
        .0.display()
    )]
    NoBase(PathBuf),
    /// The official base image could not be fetched or found in the cache.
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// The base image could not be opened or identified.
    #[error("base image {}", .path.display())]
    Base {
        /// The base image.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The base image's OS release could not be detected.
    #[error("detecting the OS of {}", .path.display())]
    Release {
        /// The base image.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<ImageError>,
    },
    /// The base image cannot be provisioned (sanity, first-boot mechanism, layout).
    #[error(transparent)]
    Image(Box<ImageError>),
    /// The cluster secrets or state could not be locked, read or recorded.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The cluster secrets could not be opened or created.
    #[error("opening the secrets of {}", .profile.display())]
    OpenSecrets {
        /// The profile.
        profile: PathBuf,
        /// Why.
        #[source]
        source: SecretsError,
    },
    /// The cluster CA could not be opened or created.
    #[error("the cluster CA in {}", .dir.display())]
    Ca {
        /// The secrets directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: PkiError,
    },
    /// SSH keys could not be resolved.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The profile's own key sources (placeholder, key files) rule out a card, known
    /// before any download.
    #[error("{}: {source}", .profile.display())]
    ProfileKeys {
        /// The profile.
        profile: PathBuf,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// No plan could be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The profile's overlay templates could not be read.
    #[error(transparent)]
    Templates(#[from] card::CardError),
    /// A node's PKI files could not be made.
    #[error("node {node}: cluster PKI")]
    NodePki {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: PkiError,
    },
    /// A node's card could not be rendered.
    #[error("node {node}")]
    Card {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: card::CardError,
    },
    /// The base image's file-system map could not be made.
    #[error("mapping {}", .path.display())]
    BaseMap {
        /// The base image.
        path: PathBuf,
        /// Why.
        #[source]
        source: BlockMapError,
    },
    /// A node's image could not be written.
    #[error(transparent)]
    Write(#[from] write::WriteError),
    /// A worker panicked while holding the cluster state.
    #[error("internal: lock poisoned")]
    Poisoned,
    /// Ctrl-C or SIGTERM arrived.
    #[error("interrupted: no new image was put in place for the unfinished nodes")]
    Interrupted,
    /// Some images failed (see [`BuildReport::check`]).
    #[error("{} of {total} image(s) failed:\n  {}", .failures.len(), .failures.join("\n  "))]
    Failed {
        /// `NODE: why`, one per failed node.
        failures: Vec<String>,
        /// Images attempted.
        total: usize,
    },
}

impl From<ImageError> for BuildError {
    fn from(e: ImageError) -> Self {
        BuildError::Image(Box::new(e))
    }
}

/// `error` and its causes, `: `-separated (as `{:#}` of an `anyhow::Error` prints).
/// The base image to build from.
struct Base {
    path: PathBuf,
    /// Its SHA-256, when the cache knows it.
    sha256: Option<String>,
    /// The OS list's `init_format`, when the base came from it.
    init_format: Option<String>,
}

/// One node's card, ready to be laid onto a copy of the base: into an image file by
/// [`build`], or composed on the fly by `piimg flash --node`.
#[derive(Debug)]
pub struct Job {
    /// The node is the cluster's bootstrap server (recorded when issued).
    bootstrap: bool,
    /// The rendered card.
    pub card: Card,
    /// Further boot-partition files (the manifest), path → bytes.
    pub extra: BTreeMap<String, Vec<u8>>,
}

/// Everything a build decides before it writes an image: the checked base, the
/// cluster secrets (held open), and each requested node's card.
#[derive(Debug)]
pub struct Prepared {
    /// The base image.
    pub base: PathBuf,
    /// Its release.
    pub release: Release,
    /// The first-boot mechanism the cards use.
    pub first_boot: FirstBoot,
    /// The boot partition's byte span in the base.
    pub boot_span: (u64, u64),
    /// One card per requested node, in request order.
    pub jobs: Vec<Job>,
    cluster: ClusterSecrets,
}

impl Prepared {
    /// Records in the cluster state that `node`'s card was issued (written to an image
    /// or a card), as [`build`] does for every image it puts in place.
    pub fn mark_issued(&mut self, node: &str) -> Result<(), BuildError> {
        let bootstrap = self.jobs.iter().any(|j| j.card.node == node && j.bootstrap);
        Ok(self.cluster.mark_issued(node, bootstrap)?)
    }
}

/// Builds the images `req` asks for; `out` gets progress and warnings. Nodes whose
/// image fails are in [`BuildReport::failures`]; anything before the images (profile,
/// base, secrets, plan, cards) stops the build.
pub fn build(req: &BuildRequest, out: &Reporter) -> Result<BuildReport, BuildError> {
    let Prepared {
        base,
        release,
        first_boot,
        boot_span: span,
        jobs,
        mut cluster,
    } = prepare(req, out)?;
    let cache = crate::fetch::Cache::default_dir()
        .ok()
        .map(|d| d.join("bmap"));
    out.info("mapping the base image (cached after the first build)");
    let base_map =
        blockmap::base_map(&base, &write::cuts(span), cache.as_deref()).map_err(|source| {
            BuildError::BaseMap {
                path: base.clone(),
                source,
            }
        })?;
    let opts = write::WriteOptions {
        xz: req.xz,
        xz_threads: if req.nodes == Nodes::All && jobs.len() > 1 {
            1
        } else {
            0
        },
        xz_preset: 6,
        reflink: true,
        sha256: req.sha256,
        base_map: Some(Arc::new(base_map)),
    };
    let threads = req
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    let results = write_all(jobs, &base, &req.out_dir, &opts, threads, out, &mut cluster);
    if interrupt::interrupted() {
        return Err(BuildError::Interrupted);
    }
    let mut report = BuildReport {
        images: Vec::new(),
        failures: Vec::new(),
    };
    for r in results {
        match r {
            Ok(written) => report.images.push(BuiltImage {
                written,
                release: release.codename.clone(),
                first_boot,
            }),
            Err(f) => report.failures.push(f),
        }
    }
    Ok(report)
}

/// The checks of the profile's keys that need no network: no placeholder, every key
/// file readable, and (`offline`) at least one key without GitHub's.
fn local_keys(profile: &Profile, offline: bool) -> Result<(), KeyError> {
    keys::no_placeholder(profile)?;
    let local = keys::resolve(profile, keys::KeySources::Local)?;
    if offline {
        keys::for_card(profile, local, keys::KeySources::Local)?;
    }
    Ok(())
}

/// Everything [`build`] does before writing images: validate the profile, check the
/// base, open (or create) the secrets and CA, plan, and render each node's card.
pub fn prepare(req: &BuildRequest, out: &Reporter) -> Result<Prepared, BuildError> {
    interrupt::install();
    let profile = profile::load(&req.profile)?;
    let findings = profile::validate(&profile);
    // A key file that cannot be read is a warning for `validate`, an error below.
    for w in findings
        .warnings
        .iter()
        .filter(|w| !w.field.starts_with("access.ssh_key_files["))
    {
        out.warn(format!("{}: {w}", req.profile.display()));
    }
    if !findings.is_ok() {
        return Err(BuildError::Invalid {
            profile: req.profile.clone(),
            errors: findings.errors.iter().map(|e| e.to_string()).collect(),
        });
    }
    let wanted = select_nodes(&profile, &req.nodes)?;
    // Temp files killed runs left of any of these nodes' outputs go now, also of
    // outputs this run may not reach.
    for n in &wanted {
        for ext in ["img", "img.bmap", "img.xz"] {
            crate::atomic::remove_stale_temps(&req.out_dir.join(format!("{n}.{ext}")));
        }
    }
    let build_time = build_time()?;
    // A key set nobody can log in with, or a key file that cannot be read, is known
    // without the network: refuse it before a download.
    local_keys(&profile, req.offline).map_err(|source| BuildError::ProfileKeys {
        profile: req.profile.clone(),
        source,
    })?;

    // The base is checked (sanity, release, first-boot mechanism) before anything is
    // created or built.
    let base = base_image(req, out)?;
    let image = Image::open(&base.path).map_err(|e| BuildError::Base {
        path: base.path.clone(),
        source: Box::new(e),
    })?;
    crate::image::sanity::check(&image)?;
    let release = image
        .root()
        .and_then(|r| r.release())
        .map_err(|source| BuildError::Release {
            path: base.path.clone(),
            source: Box::new(source),
        })?;
    let os = Os {
        codename: release.codename.clone(),
        first_boot: crate::image::choose_first_boot(
            &base.path,
            &release,
            base.init_format.as_deref(),
        )?,
    };
    let span = write::boot_span(&image)?;
    drop(image);
    // The keys too come before any secret: a card nobody can log into is refused,
    // and a GitHub fetch that fails leaves no half-made cluster behind.
    let sources = if req.offline {
        keys::KeySources::Local
    } else {
        keys::KeySources::All
    };
    let ssh_keys = keys::for_card(&profile, keys::resolve(&profile, sources)?, sources)?;
    let base_id = match &base.sha256 {
        Some(sha) => BaseId::Sha256(sha.clone()),
        None => BaseId::of_file(&base.path).map_err(|e| BuildError::Base {
            path: base.path.clone(),
            source: Box::new(e),
        })?,
    };

    // Concurrent first builds: one creates the secrets and the CA, the others wait
    // for it and use them.
    let held = secrets::lock(&req.profile, |lock| {
        out.info(format!(
            "another piimg run is setting up this cluster's secrets (holds {}); waiting for it",
            lock.display()
        ))
    })?;
    let cluster = ClusterSecrets::open_or_create(
        &req.profile,
        secrets::SecretsOptions {
            new_cluster: req.new_cluster,
        },
    )
    .map_err(|source| BuildError::OpenSecrets {
        profile: req.profile.clone(),
        source,
    })?;
    // The cluster CA lives in the secrets directory, so `--new-cluster` (which moves
    // that directory aside) also starts a fresh CA.
    let ca = ClusterCa::open_or_create(cluster.dir(), &profile.cluster.name).map_err(|source| {
        BuildError::Ca {
            dir: cluster.dir().to_path_buf(),
            source,
        }
    })?;
    drop(held);
    if let Some(old) = cluster.moved_aside() {
        out.info(format!(
            "--new-cluster: previous secrets moved to {}",
            old.display()
        ));
    }
    let plans = crate::plan::plan_with(
        &profile,
        &restore_state(cluster.state(), req.restore),
        ssh_keys,
    )?;
    if req.restore {
        for p in plans
            .iter()
            .filter(|p| wanted.contains(&p.name) && p.starts_cluster())
        {
            out.info(format!(
                "--restore: {}'s card initialises the cluster again (same token and CA) when no other server answers within {} s; then restore the etcd snapshot on it (README: restoring a cluster from an etcd snapshot)",
                p.name, profile.k3s.init_window_seconds
            ));
        }
    }
    let plans: Vec<NodePlan> = plans
        .into_iter()
        .filter(|p| wanted.contains(&p.name))
        .collect();

    out.info(format!(
        "base {} ({} {}), first boot via {}",
        base.path.display(),
        release.pretty_name,
        release.codename,
        match os.first_boot {
            FirstBoot::SystemdRun => "systemd.run hook",
            FirstBoot::CloudInit => "cloud-init",
        }
    ));

    let jobs = cards(
        &plans, &profile, &cluster, &ca, &os, &base, base_id, &release, build_time, out,
    )?;
    Ok(Prepared {
        base: base.path,
        release,
        first_boot: os.first_boot,
        boot_span: span,
        jobs,
        cluster,
    })
}

/// The cluster state the plan sees: with `restore`, as if the bootstrap server's card
/// had never been issued, so that card may initialise the cluster again.
pub fn restore_state(state: &ClusterState, restore: bool) -> ClusterState {
    let mut s = state.clone();
    if restore {
        s.bootstrap_issued = false;
    }
    s
}

/// Every planned node's card and manifest, warning about a bootstrap card that may
/// no longer start the cluster.
#[allow(clippy::too_many_arguments)]
fn cards(
    plans: &[NodePlan],
    profile: &Profile,
    cluster: &ClusterSecrets,
    ca: &ClusterCa,
    os: &Os,
    base: &Base,
    base_id: BaseId,
    release: &Release,
    build_time: u64,
    out: &Reporter,
) -> Result<Vec<Job>, BuildError> {
    let templates = match plans.first().and_then(|p| p.overlay_dir.as_deref()) {
        Some(dir) => Templates::with_overlay(dir)?,
        None => Templates::builtin(),
    };
    let addons = crate::pki::manifests::Addons {
        cert_manager: profile.addons.cert_manager,
        monitoring: profile.addons.monitoring,
    };
    let base_name = base
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Read only when a server card being built sends its snapshots to S3: agents
    // never get them, and a profile without [k3s.etcd_s3] needs no such files.
    let etcd_s3 = if plans.iter().any(|p| p.k3s.etcd_s3.is_some()) {
        Some(cluster.etcd_s3_credentials()?)
    } else {
        None
    };
    let mut jobs = Vec::new();
    for plan in plans {
        if plan.bootstrap && !plan.starts_cluster() {
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
            first_bring_up: true,
            addons: addons.clone(),
            agent_token_secret: cluster.agent_token_secret().map(str::to_string),
            init_window_secs: profile.k3s.init_window_seconds,
            node_cleaner_days: profile.k3s.node_cleaner_days,
            etcd_s3: etcd_s3.clone(),
        };
        let nf = crate::pki::files_for_node(plan, ca, cluster.token_secret(), &ha).map_err(
            |source| BuildError::NodePki {
                node: plan.name.clone(),
                source,
            },
        )?;
        let node_secrets = NodeSecrets {
            token: nf.token,
            agent_token: nf.agent_token,
            node_password: Some(nf.node_password),
            files: nf.secret_files,
        };
        let node_ha = NodeHa {
            root_files: nf.files,
            ha: nf.ha,
        };
        let card = card::render(
            plan,
            &node_secrets,
            &node_ha,
            os,
            &templates,
            crate::agent::AGENT_BINARY,
            RenderOptions { build_time },
        )
        .map_err(|source| BuildError::Card {
            node: plan.name.clone(),
            source,
        })?;
        let inputs = Inputs::current(
            profile,
            &plan.name,
            cluster.state(),
            base_id.to_string(),
            crate::agent::AGENT_BINARY,
        );
        let manifest = manifest_json(&card, release, &base_name, base.sha256.as_deref(), inputs);
        let mut extra = BTreeMap::new();
        extra.insert(piimg_contract::MANIFEST_FILE.to_string(), manifest);
        jobs.push(Job {
            bootstrap: plan.bootstrap,
            card,
            extra,
        });
    }
    Ok(jobs)
}

type JobResult = Result<write::Written, NodeFailure>;

/// Writes every card's image, `threads` at a time; records each issued card.
fn write_all(
    jobs: Vec<Job>,
    base: &Path,
    out_dir: &Path,
    opts: &write::WriteOptions,
    threads: usize,
    out: &Reporter,
    cluster: &mut ClusterSecrets,
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
                    let Some((i, job)) = next else {
                        break;
                    };
                    if interrupt::interrupted() {
                        break;
                    }
                    let r = write_one(&job, base, out_dir, opts, out, &multi, &cluster);
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

/// Writes one job's image and records its card as issued.
fn write_one(
    job: &Job,
    base: &Path,
    out_dir: &Path,
    opts: &write::WriteOptions,
    out: &Reporter,
    multi: &MultiProgress,
    cluster: &Mutex<&mut ClusterSecrets>,
) -> JobResult {
    let card = &job.card;
    let fail = |error: BuildError| NodeFailure {
        node: card.node.clone(),
        error,
    };
    let bar = out.bytes(0, &card.node);
    let bar = if out.mode() == OutputMode::Human {
        multi.add(bar)
    } else {
        bar
    };
    let r = write::write_image(
        base,
        card,
        &job.extra,
        out_dir,
        opts,
        &mut |phase, d, total| {
            bar.set_length(total);
            bar.set_position(d);
            bar.set_message(format!("{} {phase}", card.node));
        },
    );
    bar.finish_and_clear();
    let written = r.map_err(|e| fail(e.into()))?;
    let mut c = cluster.lock().map_err(|_| fail(BuildError::Poisoned))?;
    c.mark_issued(&card.node, job.bootstrap)
        .map_err(|e| fail(e.into()))?;
    Ok(written)
}

/// The names of the nodes to build, in profile order for [`Nodes::All`], else in
/// request order without repeats.
fn select_nodes(profile: &Profile, nodes: &Nodes) -> Result<Vec<String>, BuildError> {
    let known: Vec<String> = profile.nodes.iter().map(|n| n.name.clone()).collect();
    let named = match nodes {
        Nodes::All => return Ok(known),
        Nodes::Named(named) => named,
    };
    let mut out = Vec::new();
    for n in named {
        if !known.contains(n) {
            return Err(BuildError::UnknownNode {
                node: n.clone(),
                profile: profile.path.clone(),
                known,
            });
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

/// SOURCE_DATE_EPOCH when set (reproducible builds), else now.
fn build_time() -> Result<u64, BuildError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim()
                .parse::<u64>()
                .map_err(|source| BuildError::SourceDateEpoch {
                    value: v.clone(),
                    source,
                })
        }
        _ => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

/// The request's base, or the cached official image (fetched unless offline), with
/// its sha256 and the OS list's `init_format` when the cache knows them.
fn base_image(req: &BuildRequest, out: &Reporter) -> Result<Base, BuildError> {
    if let Some(b) = &req.base {
        if !b.exists() {
            return Err(BuildError::NoBase(b.clone()));
        }
        return Ok(Base {
            path: b.clone(),
            sha256: None,
            init_format: None,
        });
    }
    let mut opts = crate::fetch::FetchOptions::from_env()?;
    opts.offline = req.offline;
    let img = crate::fetch::ensure_base(&opts, out)?;
    Ok(Base {
        path: img.path,
        sha256: Some(img.sha256),
        init_format: img.init_format,
    })
}

/// The card's `piimg/manifest.json`.
fn manifest_json(
    card: &Card,
    release: &Release,
    base_name: &str,
    base_sha: Option<&str>,
    inputs: Inputs,
) -> Vec<u8> {
    let release = if release.pretty_name.is_empty() {
        release.codename.clone()
    } else {
        format!("{} ({})", release.codename, release.pretty_name)
    };
    crate::manifest::Manifest {
        manifest_version: crate::manifest::MANIFEST_VERSION,
        profile: card.profile.clone(),
        cluster: card.cluster.clone(),
        node: card.node.clone(),
        piimg_version: env!("CARGO_PKG_VERSION").to_string(),
        built_at: crate::manifest::rfc3339_utc(i64::try_from(card.build_time).unwrap_or(i64::MAX)),
        base_image: crate::manifest::BaseImage {
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
