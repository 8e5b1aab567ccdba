//! Step `clock`: a Pi has no RTC. Wait (bounded) for systemd-timesyncd, else take
//! the HTTP `Date` of a server (a k3s server's `/ping`, the gateway, or `--time-url`).

use crate::error::Error;
use crate::exec::Exec;
use crate::http::Probe;
use crate::log::would;
use crate::node_fs::NodeFs;
use crate::retry::wait_for;
use crate::runner::Cmd;
use crate::time::{CLOCK_FLOOR, human, now, parse_http_date, rfc3339};
use piimg_contract::NodeConfig;
use std::time::Duration;

/// systemd-timesyncd's flag file, present once the clock is synchronised.
pub const SYNCED_FLAG: &str = "/run/systemd/timesync/synchronized";

/// Where a `Date` header may come from, in order: `--time-url`s, the other servers'
/// `/ping`, the gateway.
pub fn time_sources(time_urls: &[String], cfg: &NodeConfig, api_port: u16) -> Vec<String> {
    let mut urls = time_urls.to_vec();
    for s in &cfg.servers {
        if s.name != cfg.node_name {
            urls.push(format!("https://{}:{api_port}/ping", s.ip));
        }
    }
    urls.push(format!("http://{}/", cfg.network.gateway));
    urls
}

/// Step `clock`.
///
/// Waits up to `limit` for the flag, then asks `sources` in order; sets the clock
/// through `exec` (live system only).
pub fn sync(
    sources: &[String],
    limit: Duration,
    fs: &NodeFs,
    exec: &Exec,
    probe: &dyn Probe,
) -> Result<String, Error> {
    if fs.dry() {
        would(&format!(
            "wait up to {} for {SYNCED_FLAG}, else take the Date of {}",
            human(limit),
            sources.join(", ")
        ));
        return Ok("dry run".into());
    }
    let flag = fs.path(SYNCED_FLAG);
    if wait_for(limit, || Ok(flag.exists().then_some(()))).is_ok() {
        return Ok(format!(
            "clock synchronised by systemd-timesyncd: {}",
            rfc3339(now())
        ));
    }
    let mut tried = Vec::new();
    for url in sources {
        let date = match probe.get(exec, url, Duration::from_secs(5)) {
            Ok(reply) => reply.date.and_then(|d| parse_http_date(&d)),
            Err(e) => {
                tried.push(format!("{url}: {e}"));
                continue;
            }
        };
        let Some(epoch) = date else {
            tried.push(format!("{url}: no usable Date header"));
            continue;
        };
        let off = epoch as i64 - now() as i64;
        if off.abs() > 2 {
            exec.run_ok_live(&Cmd::new("date", &["-u", "-s", &format!("@{epoch}")]))?;
        }
        return Ok(format!(
            "clock not synchronised after {}; took the Date of {url}: {} (off by {off} s)",
            human(limit),
            rfc3339(epoch)
        ));
    }
    let msg = format!(
        "clock not synchronised after {} and no Date from {}",
        human(limit),
        tried.join("; ")
    );
    if now() >= CLOCK_FLOOR {
        crate::log::warn(&msg);
        Ok(format!("{msg}; continuing with {}", rfc3339(now())))
    } else {
        Err(Error::failed(format!(
            "{msg}; the clock reads {}, before this agent existed: certificates would be invalid",
            rfc3339(now())
        )))
    }
}
