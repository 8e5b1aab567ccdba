//! Step `network`: wait (bounded) for a default route.

use crate::ctx::{Ctx, human, wait_for};
use crate::error::Error;

/// True if /proc/net/route (text) has a default IPv4 route that is up.
pub fn has_default_route(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
        (f.get(1) == Some(&"00000000") && flags & 1 == 1).then(|| f[0].to_string())
    })
}

/// Waits for a default route (the unit is ordered after network-online.target too).
pub fn wait(ctx: &mut Ctx) -> Result<String, Error> {
    if ctx.dry() {
        ctx.would(&format!(
            "wait up to {} for a default route",
            human(ctx.opts.network_timeout)
        ));
        return Ok("dry run".into());
    }
    let path = ctx.host("/proc/net/route");
    let gw = ctx.cfg.network.gateway;
    let iface = ctx.cfg.network.interface.clone();
    wait_for(ctx.opts.network_timeout, || {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("/proc/net/route: {e}"))?;
        Ok(has_default_route(&text))
    })
    .map(|dev| format!("default route via {dev}"))
    .map_err(|last| {
        Error::failed(format!(
            "no default route after {} (expected via {gw} on {iface}; check the NetworkManager keyfile and the cable): {last}",
            human(ctx.opts.network_timeout)
        ))
    })
}
