//! Step `join`: decide how to join (through the [`JoinPolicy`] seam, which probes,
//! waits and cleans up as needed) and persist the decision.

use crate::error::Error;
use crate::join::Join;
use crate::join_policy::{JoinEnv, JoinPolicy};
use crate::time::human;
use std::time::Duration;

/// Step `join`. A decision left by an interrupted run is not trusted: the step decides
/// again (the target may have gone, or a peer may have come back).
/// `decision` is the state's record of it, `init_window_secs` the card's init window.
pub fn decide(
    policy: &dyn JoinPolicy,
    env: &JoinEnv,
    init_window_secs: u64,
    decision: &mut Option<Join>,
) -> Result<String, Error> {
    *decision = None;
    let join = policy.decide(env)?;
    *decision = Some(join.clone());
    if env.fs.dry() {
        return Ok("dry run".into());
    }
    Ok(match join {
        Join::ClusterInit => format!(
            "bootstrap server of a first bring-up, no server answered during the {} window: initialising a new cluster (cluster-init)",
            human(Duration::from_secs(init_window_secs))
        ),
        Join::Existing => "etcd data exists: starting k3s as it was".into(),
        Join::Server { ip, port } => {
            format!("joining through https://{ip}:{port} (pinned CA, answers /ping)")
        }
    })
}
