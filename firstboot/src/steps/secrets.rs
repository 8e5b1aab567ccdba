//! Moving the card's secrets into the root filesystem (phase 1, first) and scrubbing
//! them once the node is Ready.

use crate::ctx::Ctx;
use crate::error::{Error, io};
use crate::fsx;
use piimg_contract::{CardSecrets, SECRETS_FILE};

/// Where the secrets live on the node until the node is Ready (0600, dir 0700).
pub const ROOT_SECRETS: &str = "/var/lib/piimg/secrets.json";
/// The pre-seeded k3s node password.
pub const NODE_PASSWORD: &str = "/etc/rancher/node/password";

/// Loads the secrets: the node copy if it exists, else the card's.
pub fn load(ctx: &Ctx) -> Result<CardSecrets, Error> {
    if let Some(text) = ctx.read(ROOT_SECRETS)? {
        return Ok(CardSecrets::from_json(&text)?);
    }
    if let Some(text) = ctx.read_card(SECRETS_FILE)? {
        return Ok(CardSecrets::from_json(&text)?);
    }
    Err(Error::failed(format!(
        "no secrets: neither {ROOT_SECRETS} nor the card's {SECRETS_FILE} exists; rebuild the card with `piimg build`"
    )))
}

/// Step `secrets`: copy the card's secrets to [`ROOT_SECRETS`], write the node
/// password and secret files, then overwrite the card copy with zeros and delete it.
pub fn take(ctx: &mut Ctx) -> Result<String, Error> {
    let card_copy = ctx.read_card(SECRETS_FILE)?;
    let secrets = load(ctx)?;
    ctx.mkdir("/var/lib/piimg", 0o700, Some((0, 0)))?;
    if let Some(text) = &card_copy {
        ctx.put(ROOT_SECRETS, 0o600, text.as_bytes(), Some((0, 0)))?;
    }
    if let Some(pw) = &secrets.node_password {
        ctx.mkdir("/etc/rancher/node", 0o700, Some((0, 0)))?;
        ctx.put(
            NODE_PASSWORD,
            0o600,
            format!("{pw}\n").as_bytes(),
            Some((0, 0)),
        )?;
    }
    for (i, f) in secrets.files.iter().enumerate() {
        super::files::check_path(&f.path, &format!("{SECRETS_FILE}: files[{i}]"))?;
        ctx.put(&f.path, f.mode, f.content.as_bytes(), Some((0, 0)))?;
    }
    let mut msg = format!(
        "secrets in {ROOT_SECRETS}; {} secret file(s){}",
        secrets.files.len(),
        if secrets.node_password.is_some() {
            ", node password pre-seeded"
        } else {
            ""
        }
    );
    if card_copy.is_some() {
        scrub_card(ctx)?;
        msg.push_str("; card copy zeroed and deleted");
    }
    Ok(msg)
}

fn scrub_card(ctx: &Ctx) -> Result<bool, Error> {
    if ctx.dry() {
        ctx.would(&format!("zero and delete card {SECRETS_FILE}"));
        return Ok(true);
    }
    fsx::scrub(&ctx.card(SECRETS_FILE)).map_err(io(SECRETS_FILE))
}

/// Step `scrub`: the node is Ready; remove secrets that are no longer needed (the
/// token stays in the 0600 k3s config, which k3s reads on every start).
pub fn scrub(ctx: &mut Ctx) -> Result<String, Error> {
    let card = scrub_card(ctx)?;
    let node = if ctx.dry() {
        ctx.would(&format!("zero and delete {ROOT_SECRETS}"));
        true
    } else {
        fsx::scrub(&ctx.host(ROOT_SECRETS)).map_err(io(ROOT_SECRETS))?
    };
    // Left behind only if the agent died while using it.
    if ctx.dry() {
        ctx.would(&format!("remove {}", crate::join::SERVER_AUTH_FILE));
    } else {
        fsx::scrub(&ctx.host(crate::join::SERVER_AUTH_FILE))
            .map_err(io(crate::join::SERVER_AUTH_FILE))?;
    }
    // The node-cleaner identity is only needed before the join.
    if let Some(nc) = ctx.cfg.ha.node_cleaner.clone() {
        for path in [&nc.cert, &nc.key] {
            super::files::check_path(path, "node.json: ha.node_cleaner")?;
            if ctx.dry() {
                ctx.would(&format!("zero and delete {path}"));
            } else {
                fsx::scrub(&ctx.host(path)).map_err(io(path))?;
            }
        }
    }
    Ok(format!(
        "{ROOT_SECRETS} {}; card {SECRETS_FILE} {}",
        if node {
            "zeroed and deleted"
        } else {
            "already gone"
        },
        if card {
            "zeroed and deleted"
        } else {
            "already gone"
        }
    ))
}
