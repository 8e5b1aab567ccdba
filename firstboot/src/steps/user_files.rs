//! Step `user-files`: the profile's `[[files]]`, laid after the admin user exists,
//! each with its mode and its owner resolved by name in the node's /etc/passwd and
//! /etc/group (so the admin user, renamed or created by the `user` step, can own one).

use super::files::check_path;
use super::user::accounts;
use crate::error::Error;
use crate::node_fs::NodeFs;
use piimg_contract::customize::FileOwner;
use piimg_contract::{BOOT_MOUNT, RootFile};

/// Node directories a card's `[[files]]` may not write into (the builder refuses
/// them too; a hand-edited card is refused here).
const FORBIDDEN: &[&str] = &[BOOT_MOUNT, "/var/lib/piimg"];

/// The uid and gid of `owner` on the node (`None`: root).
pub fn resolve_owner(owner: Option<&FileOwner>, fs: &NodeFs) -> Result<(u32, u32), Error> {
    let Some(o) = owner else {
        return Ok((0, 0));
    };
    let passwd = fs.read("/etc/passwd")?.unwrap_or_default();
    let acct = accounts(&passwd).into_iter().find(|a| a.name == o.user);
    let Some(acct) = acct else {
        if fs.dry() {
            return Ok((0, 0));
        }
        return Err(Error::failed(format!(
            "owner {:?} is not a user of this node (/etc/passwd); name a user the image or piimg creates, e.g. the admin user",
            o.user
        )));
    };
    let gid = match &o.group {
        None => acct.gid,
        Some(g) => {
            let groups = fs.read("/etc/group")?.unwrap_or_default();
            groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g.as_str())
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    Error::failed(format!(
                        "group {g:?} is not a group of this node (/etc/group)"
                    ))
                })?
        }
    };
    Ok((acct.uid, gid))
}

/// Writes every `[[files]]` entry atomically with its mode and owner.
pub fn lay_down(files: &[RootFile], fs: &NodeFs) -> Result<String, Error> {
    let mut changed = 0;
    for (i, f) in files.iter().enumerate() {
        let what = format!("node.json: customize.files[{i}]");
        check_path(&f.path, &what)?;
        if FORBIDDEN
            .iter()
            .any(|d| f.path == *d || f.path.starts_with(&format!("{d}/")))
        {
            return Err(Error::failed(format!(
                "{what}: {} is under a directory piimg manages; refused",
                f.path
            )));
        }
        if f.mode > 0o7777 {
            return Err(Error::failed(format!(
                "{what} ({}): mode {:o} is not a permission mode",
                f.path, f.mode
            )));
        }
        let owner = resolve_owner(f.owner.as_ref(), fs)
            .map_err(|e| Error::failed(format!("{what} ({}): {e}", f.path)))?;
        if fs.put(&f.path, f.mode, f.content.as_bytes(), Some(owner))? {
            changed += 1;
        }
    }
    let list: Vec<String> = files
        .iter()
        .map(|f| match &f.owner {
            Some(o) => format!(
                "{} {:04o} {}:{}",
                f.path,
                f.mode,
                o.user,
                o.group.as_deref().unwrap_or("(primary)")
            ),
            None => format!("{} {:04o} root:root", f.path, f.mode),
        })
        .collect();
    Ok(if files.is_empty() {
        "no [[files]] on the card".into()
    } else {
        format!(
            "{} file(s), {changed} written: {}",
            files.len(),
            list.join(", ")
        )
    })
}
