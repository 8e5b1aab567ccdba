//! Whether a built card image still matches what `piimg build` would make now: the
//! digests its manifest records ([`piimg::inputs::Inputs`]) against the profile,
//! cluster state, base image and piimg of this run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use piimg::image::Image;
use piimg::inputs::{BaseId, Inputs};
use piimg::manifest::Manifest;
use piimg::profile::{self, secrets};
use piimg::progress::{OutputMode, Reporter};

/// The manifest of the card image at `image`, `None` when it has none.
fn manifest_of(image: &Path) -> anyhow::Result<Option<Manifest>> {
    let img = Image::open(image).with_context(|| format!("reading {}", image.display()))?;
    let boot = img.boot()?;
    Ok(Manifest::read_from(&boot)?)
}

/// Whether a node's image in the output directory is current.
#[derive(Debug, PartialEq, Eq)]
pub enum Staleness {
    /// Built from what a build would use now.
    Current,
    /// One reason per kind of input that changed since it was built.
    Stale(Vec<String>),
    /// Not a piimg card (no readable manifest): it cannot be checked; why.
    Unknown(String),
}

/// Whether `image`, the file `flash --node NAME` would write, is current.
/// `profile_arg`/`base_arg` are the ones a rebuild would get.
pub fn node_image_changes(
    image: &Path,
    node: &str,
    profile_arg: Option<&Path>,
    base_arg: Option<&Path>,
) -> anyhow::Result<Staleness> {
    let manifest = match manifest_of(image) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(Staleness::Unknown("it has no piimg manifest".into())),
        Err(e) => return Ok(Staleness::Unknown(format!("{e:#}"))),
    };
    let Some(built) = manifest.inputs else {
        return Ok(Staleness::Stale(vec![
            "it was built by an older piimg that did not record what it was built from".into(),
        ]));
    };
    if manifest.node != node {
        return Ok(Staleness::Stale(vec![format!(
            "it is node {}'s card",
            manifest.node
        )]));
    }
    let profile_path = super::build::profile_path(profile_arg)?;
    let profile = profile::load(&profile_path)?;
    let state = secrets::peek_state(&profile_path)
        .with_context(|| format!("the cluster state of {}", profile_path.display()))?
        .unwrap_or_default();
    let base = match base_arg {
        Some(b) => BaseId::of_file(b)
            .with_context(|| format!("--base {}", b.display()))?
            .to_string(),
        // The base a rebuild would take without the network; when there is none
        // the rebuild decides (and says so), this check does not guess.
        None => cached_base().unwrap_or_else(|| built.base.clone()),
    };
    let now = Inputs::current(&profile, node, &state, base, piimg::agent::AGENT_BINARY);
    let why: Vec<String> = built
        .changes(&now)
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    Ok(if why.is_empty() {
        Staleness::Current
    } else {
        Staleness::Stale(why)
    })
}

/// The newest cached official base image's id, if the cache holds one.
fn cached_base() -> Option<String> {
    let mut opts = piimg::fetch::FetchOptions::from_env().ok()?;
    opts.offline = true;
    let img = piimg::fetch::ensure_base(&opts, &Reporter::new(OutputMode::Quiet)).ok()?;
    Some(BaseId::Sha256(img.sha256).to_string())
}

/// A warning when the card image at `image` was built from a profile whose
/// settings for its node differ from the profile found now (the one `--profile`,
/// `$PIIMG_PROFILE` or the default names, if it is the same cluster's). Silent when
/// there is no manifest or no such profile: a foreign image is the user's call.
pub fn image_warning(image: &Path, profile_arg: Option<&Path>) -> Option<String> {
    let manifest = manifest_of(image).ok()??;
    let built = manifest.inputs.as_ref()?;
    let profile_path: PathBuf = super::build::profile_path(profile_arg).ok()?;
    let profile = profile::load(&profile_path).ok()?;
    if profile.cluster.name != manifest.cluster {
        return None;
    }
    let node = &manifest.node;
    if !profile.nodes.iter().any(|n| &n.name == node) {
        return Some(format!(
            "{} was built for node {node}, which {} no longer has",
            image.display(),
            profile_path.display()
        ));
    }
    (piimg::inputs::profile_digest(&profile, node) != built.profile).then(|| {
        format!(
            "{} was built for node {node} from settings {} no longer has (its address, access or a server changed); `piimg flash --node {node} DEVICE` rebuilds it first",
            image.display(),
            profile_path.display()
        )
    })
}
