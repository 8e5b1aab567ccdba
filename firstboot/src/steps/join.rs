//! Step `join`: decide how to join (through the [`JoinPolicy`](crate::join::JoinPolicy)
//! seam), persist the decision, and wait (bounded) until the target answers `/ping`.

use crate::ctx::{Ctx, human, wait_for};
use crate::error::Error;
use crate::join::Join;
use std::time::Duration;

/// Step `join`.
pub fn decide(ctx: &mut Ctx) -> Result<String, Error> {
    let join = match &ctx.state.join {
        Some(j) => j.clone(),
        None => ctx
            .join_policy
            .decide(&ctx.cfg, ctx.opts.api_port)
            .map_err(Error::failed)?,
    };
    ctx.state.join = Some(join.clone());
    let Join::Server { ip, port } = join else {
        return Ok("bootstrap server: initialising a new cluster (cluster-init)".into());
    };
    let url = format!("https://{ip}:{port}/ping");
    if ctx.dry() {
        ctx.would(&format!(
            "wait up to {} for {url} to answer pong",
            human(ctx.opts.join_timeout)
        ));
        return Ok("dry run".into());
    }
    wait_for(ctx.opts.join_timeout, || {
        match ctx.probe.get(&url, Duration::from_secs(10)) {
            Ok(r) if r.status == 200 && r.body.trim() == "pong" => Ok(Some(())),
            Ok(r) => Err(format!("answered {} {:?}", r.status, r.body.trim())),
            Err(e) => Err(e),
        }
    })
    .map_err(|last| {
        Error::failed(format!(
            "no route to {ip}:{port} after {}: {url}: {last}",
            human(ctx.opts.join_timeout)
        ))
    })?;
    Ok(format!(
        "joining through https://{ip}:{port} (answers /ping)"
    ))
}
