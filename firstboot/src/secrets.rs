//! The node's secrets (the card's `secrets.json`): on the card until phase 1 moves
//! them into the root filesystem, there until the node is Ready. [`SecretStore`]
//! reads whichever copy exists and keeps or scrubs a copy; the steps that move and
//! scrub them are in `steps::secrets`.

use crate::error::Error;
use crate::node_fs::NodeFs;
use piimg_contract::CardSecrets;

/// Where the secrets live on the node until the node is Ready (0600, dir 0700).
pub const ROOT_SECRETS: &str = "/var/lib/piimg/secrets.json";

/// The two copies of the secrets: one on the node, one on the card.
#[derive(Debug, Clone, Copy)]
pub struct SecretStore<'a> {
    fs: &'a NodeFs,
    node_copy: &'a str,
    card_copy: &'a str,
}

impl<'a> SecretStore<'a> {
    /// Secrets at node path `node_copy` and card path `card_copy`, reached through `fs`.
    pub fn new(fs: &'a NodeFs, node_copy: &'a str, card_copy: &'a str) -> Self {
        SecretStore {
            fs,
            node_copy,
            card_copy,
        }
    }

    /// The node copy's path (for messages).
    pub fn node_copy(&self) -> &str {
        self.node_copy
    }

    /// The card copy's path (for messages).
    pub fn card_copy(&self) -> &str {
        self.card_copy
    }

    /// The card copy's text, if it is still there.
    pub fn on_card(&self) -> Result<Option<String>, Error> {
        self.fs.read_card(self.card_copy)
    }

    /// Loads the secrets: the node copy if it exists, else the card's.
    pub fn load(&self) -> Result<CardSecrets, Error> {
        if let Some(text) = self.fs.read(self.node_copy)? {
            return Ok(CardSecrets::from_json(&text)?);
        }
        if let Some(text) = self.on_card()? {
            return Ok(CardSecrets::from_json(&text)?);
        }
        Err(Error::failed(format!(
            "no secrets: neither {} nor the card's {} exists; rebuild the card with `piimg build`",
            self.node_copy, self.card_copy
        )))
    }

    /// Keeps `text` (the card copy) as the node copy: 0600, owned by root.
    pub fn keep(&self, text: &str) -> Result<bool, Error> {
        self.fs
            .put(self.node_copy, 0o600, text.as_bytes(), Some((0, 0)))
    }

    /// Zeroes and deletes the card copy; `false` if it was gone.
    pub fn scrub_card(&self) -> Result<bool, Error> {
        self.fs.scrub_card(self.card_copy)
    }

    /// Zeroes and deletes the node copy; `false` if it was gone.
    pub fn scrub_node(&self) -> Result<bool, Error> {
        self.fs.scrub(self.node_copy)
    }
}
