//! Step `clock`: a Pi has no RTC. Wait (bounded) for systemd-timesyncd, else take
//! the HTTP `Date` of a server (a k3s server's `/ping`, the gateway, or `--time-url`).

use crate::ctx::{Ctx, human, wait_for};
use crate::error::Error;
use crate::runner::Cmd;
use crate::time::{CLOCK_FLOOR, now, parse_http_date, rfc3339};
use std::time::Duration;

/// systemd-timesyncd's flag file, present once the clock is synchronised.
pub const SYNCED_FLAG: &str = "/run/systemd/timesync/synchronized";

/// Where a `Date` header may come from, in order.
pub fn time_sources(ctx: &Ctx) -> Vec<String> {
    let mut urls = ctx.opts.time_urls.clone();
    for s in &ctx.cfg.servers {
        if s.name != ctx.cfg.node_name {
            urls.push(format!("https://{}:{}/ping", s.ip, ctx.opts.api_port));
        }
    }
    urls.push(format!("http://{}/", ctx.cfg.network.gateway));
    urls
}

/// Step `clock`.
pub fn sync(ctx: &mut Ctx) -> Result<String, Error> {
    let limit = ctx.opts.clock_timeout;
    if ctx.dry() {
        ctx.would(&format!(
            "wait up to {} for {SYNCED_FLAG}, else take the Date of {}",
            human(limit),
            time_sources(ctx).join(", ")
        ));
        return Ok("dry run".into());
    }
    let flag = ctx.host(SYNCED_FLAG);
    if wait_for(limit, || Ok(flag.exists().then_some(()))).is_ok() {
        return Ok(format!(
            "clock synchronised by systemd-timesyncd: {}",
            rfc3339(now())
        ));
    }
    let mut tried = Vec::new();
    for url in time_sources(ctx) {
        let date = match ctx.probe.get(&url, Duration::from_secs(5)) {
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
            let cmd = Cmd::new("date", &["-u", "-s", &format!("@{epoch}")]);
            if ctx.live() {
                ctx.run_ok(&cmd)?;
            } else {
                crate::log::info(&format!("not the live system (--root): skipped `{cmd}`"));
            }
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
