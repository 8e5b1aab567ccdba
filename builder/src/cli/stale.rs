//! Whether a built card image still matches the profile: the profile digest its
//! manifest records ([`piimg::inputs::Inputs`]) against the profile found now.

use std::path::{Path, PathBuf};

use anyhow::Context;
use piimg::image::Image;
use piimg::manifest::Manifest;
use piimg::profile;

/// The manifest of the card image at `image`, `None` when it has none.
fn manifest_of(image: &Path) -> anyhow::Result<Option<Manifest>> {
    let img = Image::open(image).with_context(|| format!("reading {}", image.display()))?;
    let boot = img.boot()?;
    Ok(Manifest::read_from(&boot)?)
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
            "{} was built for node {node} from settings {} no longer has (its address, access or a server changed); `piimg flash --node {node} DEVICE` writes the card from the current profile",
            image.display(),
            profile_path.display()
        )
    })
}
