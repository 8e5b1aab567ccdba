//! The join policy the agent ships with ([`HaJoin`]): the one place that decides
//! whether this node joins a server, starts on its existing data, or initialises a
//! new cluster.
//!
//! [`JoinPolicy::decide`] returns a [`Join`]; the agent persists it in the state file
//! and the `k3s-config` step turns it into `cluster-init: true`, `server: <url>`, or
//! nothing (existing data). The policy:
//!
//! - a server with existing etcd data just starts;
//! - otherwise it probes the VIP, then every other server, in order: a server is
//!   healthy when its `/cacerts` is exactly the card's pinned CA bundle and `/ping`
//!   answers over TLS verified against that bundle; the first healthy one is joined;
//! - a server about to join first removes its own stale Node through that server
//!   with the limited node-cleaner identity and waits until its etcd member is gone;
//! - only the bootstrap card of a first-ever bring-up initialises, and only when no
//!   server answered during its whole init window (`ha.init_window_secs`: it keeps
//!   probing every peer and the VIP, so a card flashed again while the others are
//!   briefly down joins them when they return instead of starting a second cluster
//!   with the same CA — k3s's `cluster-init` with no data and no `server:` always
//!   creates a new cluster, pkg/etcd/etcd.go); every other node (a rebuilt bootstrap
//!   card too) waits, bounded by `--join-timeout`, with the reason in the card's status;
//! - requests to a server that is still starting (connection refused, 5xx, 403 before
//!   the RBAC manifests are applied) are retried inside the step ([`crate::api_retry`]);
//! - a server that serves another CA is never joined, and the status says so.

use crate::api_retry::{self, Transient};
use crate::error::Error;
use crate::join::Join;
use crate::join_policy::{JoinEnv, JoinPolicy, peers};
use crate::log::{info, warn, would};
use crate::peer::{self, Auth, Health, Peer, Pin};
use crate::retry::{Attempt, retry};
use crate::time::human;
use piimg_contract::{NODE_CONFIG_FILE, PINNED_CA_FILE, Role};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// k3s's embedded etcd data; present once this server was part of a cluster.
pub const ETCD_DATA: &str = "/var/lib/rancher/k3s/server/db/etcd";
/// Basic-auth config for curl (`server:<token password>`), 0600, removed after use.
pub const SERVER_AUTH_FILE: &str = "/var/lib/piimg/server-auth.curl";

/// The CA-pinned HA policy (see the module doc).
#[derive(Debug, Default)]
pub struct HaJoin;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl JoinPolicy for HaJoin {
    fn decide(&self, env: &JoinEnv) -> Result<Join, Error> {
        let cfg = env.cfg;
        let server = cfg.role == Role::Server;
        if server && env.fs.path(ETCD_DATA).is_dir() {
            return Ok(Join::Existing);
        }
        let may_init = server && cfg.bootstrap && cfg.ha.first_bring_up;
        let peers = peers(cfg, env.api_port);
        if peers.is_empty() && !may_init {
            return Err(Error::failed(format!(
                "{NODE_CONFIG_FILE}: no server other than {} to join, and this card may not initialise a cluster{}",
                cfg.node_name,
                if server && cfg.bootstrap {
                    " (a single-server cluster cannot re-join after re-imaging its only server: build with --new-cluster to start over)"
                } else {
                    ""
                }
            )));
        }
        let pin_file = env.fs.path(PINNED_CA_FILE);
        if let Some(pem) = &cfg.ha.cluster_ca_pem {
            env.fs.mkdir("/var/lib/piimg", 0o700, Some((0, 0)))?;
            env.fs
                .put(PINNED_CA_FILE, 0o644, pem.as_bytes(), Some((0, 0)))?;
        }
        let pin = cfg.ha.cluster_ca_pem.as_deref().map(|pem| Pin {
            pem,
            file: &pin_file,
            hash: cfg.ha.cluster_ca_sha256.as_deref().unwrap_or("unknown"),
        });
        let shown: Vec<String> = peers.iter().map(Peer::shown).collect();
        if env.fs.dry() {
            would(&format!(
                "probe {} (/cacerts pinned, /ping) for up to {}; {}",
                shown.join(", "),
                human(env.join_timeout),
                if may_init {
                    format!(
                        "initialise a new cluster if none answers for {}",
                        human(Duration::from_secs(cfg.ha.init_window_secs))
                    )
                } else {
                    "join the first healthy one".to_string()
                }
            ));
            return Ok(match peers.first() {
                Some(p) if !may_init => Join::Server {
                    ip: p.ip,
                    port: p.port,
                },
                _ => Join::ClusterInit,
            });
        }
        let why = if may_init {
            String::new()
        } else if server && cfg.bootstrap {
            "this bootstrap card was rebuilt (not a first bring-up): it never initialises a cluster and waits for a running server to join".to_string()
        } else {
            format!("waiting for a server of cluster {} to join", cfg.cluster)
        };
        // A first-bring-up card initialises only when no peer answered during the
        // whole window: a card flashed again later while the other servers are
        // briefly unreachable must not start a second cluster with the same CA.
        // No other server to hear from: nothing to wait for.
        let window = if may_init && cfg.servers.iter().any(|s| s.name != cfg.node_name) {
            Duration::from_secs(cfg.ha.init_window_secs)
        } else {
            Duration::ZERO
        };
        let limit = if may_init {
            window.max(env.join_timeout)
        } else {
            env.join_timeout
        };
        let mut foreign: Option<String> = None;
        retry(|b| {
            let mut notes = Vec::new();
            for p in &peers {
                match peer::probe(env.exec, p, pin, REQUEST_TIMEOUT) {
                    Health::Healthy => {
                        if may_init {
                            info(&format!(
                                "first bring-up card, but {} answers with this cluster's CA after {}: joining it instead of initialising",
                                p.shown(),
                                human(b.elapsed())
                            ));
                        }
                        if server {
                            if let Err(e) = remove_stale_self(env, p, pin) {
                                return Attempt::Stop(e);
                            }
                        }
                        return Attempt::Done(Join::Server {
                            ip: p.ip,
                            port: p.port,
                        });
                    }
                    Health::Refused(m) => {
                        foreign.get_or_insert_with(|| m.clone());
                        notes.push(m);
                    }
                    Health::Down(m) => {
                        notes.push(format!("no route to {}:{} ({m})", p.ip, p.port));
                    }
                }
            }
            let elapsed = b.elapsed();
            let tried = notes.join("; ");
            let msg = if !may_init {
                format!("{why}; tried: {tried}")
            } else if let Some(f) = &foreign {
                format!(
                    "first bring-up card, but a peer answered that is not a server of this cluster ({f}): not initialising a cluster next to it; waiting for a server of cluster {}; tried: {tried}",
                    cfg.cluster
                )
            } else if elapsed >= window {
                info(&format!(
                    "first bring-up: no server answered during {} ({}); initialising",
                    human(window),
                    if tried.is_empty() { "no peers" } else { &tried }
                ));
                return Attempt::Done(Join::ClusterInit);
            } else {
                env.progress.report(&format!(
                    "first bring-up: no server of cluster {} answered yet ({} of the {} window); initialising a new cluster when the window ends unless one does; tried: {tried}",
                    cfg.cluster,
                    human(elapsed),
                    human(window)
                ));
                return Attempt::Again {
                    deadline: window,
                    cap: INIT_PROBE_MAX_DELAY,
                };
            };
            if elapsed >= limit {
                return Attempt::Stop(Error::failed(format!(
                    "no healthy server to join after {}: {msg}",
                    human(limit)
                )));
            }
            env.progress.report(&format!(
                "waiting ({} of {}): {msg}",
                human(elapsed),
                human(limit)
            ));
            Attempt::Again {
                deadline: limit,
                cap: PROBE_MAX_DELAY,
            }
        })
    }
}

/// Longest pause between two probe rounds while waiting for a server to join.
const PROBE_MAX_DELAY: Duration = Duration::from_secs(30);

/// Longest pause between two probe rounds during the init window (peers that come
/// back are noticed within this).
const INIT_PROBE_MAX_DELAY: Duration = Duration::from_secs(10);

/// Before a server joins through `p`: check the server credentials (`/db/info` with
/// server basic auth, so a card with a wrong token changes nothing), delete this
/// node's stale Node with the node-cleaner identity (k3s then removes the etcd
/// member), and wait until no etcd member named for this node remains.
fn remove_stale_self(env: &JoinEnv, p: &Peer, pin: Option<Pin>) -> Result<(), Error> {
    let Some(nc) = &env.cfg.ha.node_cleaner else {
        warn("no node-cleaner identity on this card: stale-member check skipped");
        return Ok(());
    };
    let (cert, key) = (env.fs.path(&nc.cert), env.fs.path(&nc.key));
    for (path, shown) in [(&cert, &nc.cert), (&key, &nc.key)] {
        if !path.is_file() {
            return Err(Error::failed(format!(
                "{shown}: missing; the card's secrets should have put the node-cleaner identity there (rebuild the card)"
            )));
        }
    }
    let ca_file: Option<PathBuf> = pin.map(|p| p.file.to_path_buf());
    let password = peer::token_password(&env.secrets.load()?.token).to_string();
    env.fs.put(
        SERVER_AUTH_FILE,
        0o600,
        peer::curl_user_config("server", &password).as_bytes(),
        Some((0, 0)),
    )?;
    let result = stale_members(env, p, ca_file.as_deref())
        .and_then(|_| delete_node(env, p, ca_file.as_deref(), (&cert, &key)))
        .and_then(|()| wait_member_gone(env, p, ca_file.as_deref()));
    env.fs.rm(SERVER_AUTH_FILE)?;
    result
}

/// GET/DELETE of this node's Node object with the node-cleaner identity.
fn delete_node(
    env: &JoinEnv,
    p: &Peer,
    ca_file: Option<&Path>,
    id: (&Path, &Path),
) -> Result<(), Error> {
    let name = &env.cfg.node_name;
    let auth = Auth {
        ca_file,
        client: Some(id),
        config: None,
    };
    let url = p.url(&format!("/api/v1/nodes/{name}"));
    let failed = |what: &str, e: String| Error::failed(format!("{what} {url}: {e}"));
    let r = api_retry::request(env, "GET", &url, auth, Transient::ApiWithRbac)?;
    match r.status {
        404 => Ok(()),
        200 => {
            env.progress.report(&format!(
                "removing the stale Node {name} through {} (node-cleaner identity)",
                p.shown()
            ));
            let d = api_retry::request(env, "DELETE", &url, auth, Transient::ApiWithRbac)?;
            if !matches!(d.status, 200 | 202 | 404) {
                return Err(failed(
                    "DELETE",
                    format!("HTTP {} {}", d.status, d.body.trim()),
                ));
            }
            info(&format!(
                "deleted the stale Node {name} through {}",
                p.shown()
            ));
            Ok(())
        }
        s => Err(failed(
            "GET",
            format!(
                "HTTP {s} {} with the node-cleaner identity; is piimg-node-cleaner-rbac.yaml deployed on the servers?",
                r.body.trim()
            ),
        )),
    }
}

/// This node's etcd members according to `p`'s `/db/info` (server basic auth).
fn stale_members(
    env: &JoinEnv,
    p: &Peer,
    ca_file: Option<&Path>,
) -> Result<Result<Vec<String>, String>, Error> {
    let auth_file = env.fs.path(SERVER_AUTH_FILE);
    let auth = Auth {
        ca_file,
        client: None,
        config: Some(&auth_file),
    };
    let url = p.url("/db/info");
    let r = api_retry::request(env, "GET", &url, auth, Transient::Supervisor)?;
    match r.status {
        200 => peer::members_of(&env.cfg.node_name, &r.body)
            .map(Ok)
            .map_err(|e| Error::failed(format!("{url}: {e}"))),
        401 | 403 => Err(Error::failed(format!(
            "{url} refused the server credentials (HTTP {}): the card's token is not this cluster's",
            r.status
        ))),
        s => Ok(Err(format!("{url} answered HTTP {s}"))),
    }
}

fn wait_member_gone(env: &JoinEnv, p: &Peer, ca_file: Option<&Path>) -> Result<(), Error> {
    let name = &env.cfg.node_name;
    let limit = env.join_timeout;
    retry(|b| {
        let last = match stale_members(env, p, ca_file) {
            Err(e) => return Attempt::Stop(e),
            Ok(Ok(members)) if members.is_empty() => return Attempt::Done(()),
            Ok(Ok(members)) => format!("etcd member {} still listed", members.join(", ")),
            Ok(Err(other)) => other,
        };
        if b.elapsed() >= limit {
            return Attempt::Stop(Error::failed(format!(
                "{last} after {}: k3s has not removed this node's old etcd member; remove it (kubectl delete node {name}) and rerun",
                human(limit)
            )));
        }
        env.progress
            .report(&format!("waiting for the stale etcd member to go: {last}"));
        Attempt::Again {
            deadline: limit,
            cap: MEMBER_MAX_DELAY,
        }
    })
}

/// Longest pause between two looks at the etcd member list.
const MEMBER_MAX_DELAY: Duration = Duration::from_secs(5);
