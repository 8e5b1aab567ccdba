//! Step `join`: decide how to join (through the [`JoinPolicy`](crate::join::JoinPolicy)
//! seam, which probes, waits and cleans up as needed) and persist the decision.

use crate::ctx::Ctx;
use crate::error::Error;
use crate::join::Join;

/// Step `join`. A decision left by an interrupted run is not trusted: the step decides
/// again (the target may have gone, or a peer may have come back).
pub fn decide(ctx: &mut Ctx) -> Result<String, Error> {
    ctx.state.join = None;
    let join = ctx.join_policy.decide(ctx)?;
    ctx.state.join = Some(join.clone());
    if ctx.dry() {
        return Ok("dry run".into());
    }
    Ok(match join {
        Join::ClusterInit => format!(
            "bootstrap server of a first bring-up, no server answered during the {} window: initialising a new cluster (cluster-init)",
            crate::ctx::human(std::time::Duration::from_secs(ctx.cfg.ha.init_window_secs))
        ),
        Join::Existing => "etcd data exists: starting k3s as it was".into(),
        Join::Server { ip, port } => {
            format!("joining through https://{ip}:{port} (pinned CA, answers /ping)")
        }
    })
}
