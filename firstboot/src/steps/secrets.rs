//! Steps `secrets` (move the card's secrets into the root filesystem, phase 1,
//! first) and `scrub` (remove them once the node is Ready).

use crate::error::Error;
use crate::ha_join::SERVER_AUTH_FILE;
use crate::log::would;
use crate::node_fs::NodeFs;
use crate::secrets::SecretStore;
use piimg_contract::NodeCleaner;

/// The pre-seeded k3s node password.
pub const NODE_PASSWORD: &str = "/etc/rancher/node/password";

/// Step `secrets`: copy the card's secrets to the node copy, write the node
/// password and secret files, then overwrite the card copy with zeros and delete it.
pub fn take(store: &SecretStore, fs: &NodeFs) -> Result<String, Error> {
    let card_copy = store.on_card()?;
    let secrets = store.load()?;
    fs.mkdir("/var/lib/piimg", 0o700, Some((0, 0)))?;
    if let Some(text) = &card_copy {
        store.keep(text)?;
    }
    if let Some(pw) = &secrets.node_password {
        fs.mkdir("/etc/rancher/node", 0o700, Some((0, 0)))?;
        fs.put(
            NODE_PASSWORD,
            0o600,
            format!("{pw}\n").as_bytes(),
            Some((0, 0)),
        )?;
    }
    for (i, f) in secrets.files.iter().enumerate() {
        super::files::check_path(&f.path, &format!("{}: files[{i}]", store.card_copy()))?;
        fs.put(&f.path, f.mode, f.content.as_bytes(), Some((0, 0)))?;
    }
    let mut msg = format!(
        "secrets in {}; {} secret file(s){}",
        store.node_copy(),
        secrets.files.len(),
        if secrets.node_password.is_some() {
            ", node password pre-seeded"
        } else {
            ""
        }
    );
    if card_copy.is_some() {
        store.scrub_card()?;
        msg.push_str("; card copy zeroed and deleted");
    }
    Ok(msg)
}

/// Step `scrub`: the node is Ready; remove secrets that are no longer needed (the
/// token stays in the 0600 k3s config, which k3s reads on every start).
pub fn scrub(
    store: &SecretStore,
    node_cleaner: Option<&NodeCleaner>,
    fs: &NodeFs,
) -> Result<String, Error> {
    let card = store.scrub_card()?;
    let node = store.scrub_node()?;
    // Left behind only if the agent died while using it.
    if fs.dry() {
        would(&format!("remove {SERVER_AUTH_FILE}"));
    } else {
        fs.scrub(SERVER_AUTH_FILE)?;
    }
    // The node-cleaner identity is only needed before the join.
    if let Some(nc) = node_cleaner {
        for path in [&nc.cert, &nc.key] {
            super::files::check_path(path, "node.json: ha.node_cleaner")?;
            fs.scrub(path)?;
        }
    }
    Ok(format!(
        "{} {}; card {} {}",
        store.node_copy(),
        if node {
            "zeroed and deleted"
        } else {
            "already gone"
        },
        store.card_copy(),
        if card {
            "zeroed and deleted"
        } else {
            "already gone"
        }
    ))
}
