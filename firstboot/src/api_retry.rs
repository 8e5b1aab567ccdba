//! Requests to a server that may still be coming up, retried inside the step.
//!
//! During a first bring-up the servers a node talks to are themselves starting: their
//! supervisor port refuses connections until k3s listens, the API answers 503 while
//! the apiserver is not ready, and 403 until the auto-deployed RBAC manifests
//! (`server/manifests`, applied by k3s's deploy controller after the apiserver is up)
//! exist. Those answers are transient: [`request`] retries them with backoff, bounded
//! by the agent's join timeout, and its final error names every answer it met.

use crate::error::Error;
use crate::http::Reply;
use crate::join_policy::JoinEnv;
use crate::peer::{self, Auth};
use crate::retry::{Attempt, retry};
use crate::time::human;
use std::time::Duration;

/// Which HTTP answers are worth waiting out for one kind of request.
#[derive(Debug, Clone, Copy)]
pub enum Transient {
    /// Kubernetes API with a client certificate: 5xx, 429, and 403 (RBAC not applied
    /// yet).
    ApiWithRbac,
    /// k3s supervisor endpoints with basic auth: 5xx and 429 only (a 401/403 there
    /// means wrong credentials, which waiting does not fix).
    Supervisor,
}

impl Transient {
    /// True when `status` may change by itself.
    pub fn retries(self, status: u16) -> bool {
        match self {
            Transient::ApiWithRbac => status >= 500 || status == 429 || status == 403,
            Transient::Supervisor => status >= 500 || status == 429,
        }
    }
}

/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// `method url` until it answers with a status that is not [`Transient`] (returned
/// as is, for the caller to judge), retrying connection failures (not TLS trust
/// failures: a server that does not verify against the pinned CA will not start to)
/// and transient statuses with backoff, for at most the join timeout.
pub fn request(
    env: &JoinEnv,
    method: &str,
    url: &str,
    auth: Auth,
    transient: Transient,
) -> Result<Reply, Error> {
    let limit = env.join_timeout;
    let mut tried: Vec<(String, u32)> = Vec::new();
    retry(|b| {
        let answer = match peer::request(env.exec, method, url, auth, REQUEST_TIMEOUT) {
            Ok(r) if !transient.retries(r.status) => return Attempt::Done(r),
            Ok(r) => format!("HTTP {} {}", r.status, first_line(&r.body)),
            Err(e) if e.is_tls_trust() => {
                return Attempt::Stop(Error::failed(format!("{method} {url}: {e}")));
            }
            Err(e) => e.message.replace(&format!("{url}: "), ""),
        };
        match tried.last_mut() {
            Some((last, n)) if *last == answer => *n += 1,
            _ => tried.push((answer.clone(), 1)),
        }
        let elapsed = b.elapsed();
        if elapsed >= limit {
            let attempts: u32 = tried.iter().map(|(_, n)| n).sum();
            let list: Vec<String> = tried
                .iter()
                .map(|(a, n)| {
                    if *n > 1 {
                        format!("{a} (×{n})")
                    } else {
                        a.clone()
                    }
                })
                .collect();
            return Attempt::Stop(Error::failed(format!(
                "{method} {url}: no usable answer after {} and {attempts} attempt(s); tried: {}",
                human(limit),
                list.join(", then ")
            )));
        }
        env.progress.report(&format!(
            "{method} {url}: {answer}; retrying ({} of {})",
            human(elapsed),
            human(limit)
        ));
        Attempt::Again {
            deadline: limit,
            cap: MAX_DELAY,
        }
    })
}

fn first_line(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or("");
    line.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::Transient;

    #[test]
    fn what_is_worth_waiting_for() {
        for s in [500, 502, 503, 429, 403] {
            assert!(Transient::ApiWithRbac.retries(s), "{s}");
        }
        for s in [200, 201, 404, 401] {
            assert!(!Transient::ApiWithRbac.retries(s), "{s}");
        }
        assert!(Transient::Supervisor.retries(503));
        assert!(!Transient::Supervisor.retries(403) && !Transient::Supervisor.retries(401));
    }
}
