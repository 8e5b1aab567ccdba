//! Step `network`: wait (bounded) for a default route.

use crate::error::Error;
use crate::log::would;
use crate::node_fs::NodeFs;
use crate::retry::wait_for;
use crate::time::human;
use piimg_contract::Network;
use std::time::Duration;

/// True if /proc/net/route (text) has a default IPv4 route that is up.
pub fn has_default_route(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
        (f.get(1) == Some(&"00000000") && flags & 1 == 1).then(|| f[0].to_string())
    })
}

/// Waits for a default route (the unit is ordered after network-online.target too).
/// `net` is the card's network (named in the error), `limit` the bound on waiting.
pub fn wait(net: &Network, limit: Duration, fs: &NodeFs) -> Result<String, Error> {
    if fs.dry() {
        would(&format!("wait up to {} for a default route", human(limit)));
        return Ok("dry run".into());
    }
    let path = fs.path("/proc/net/route");
    let gw = net.gateway;
    let iface = &net.interface;
    wait_for(limit, || {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("/proc/net/route: {e}"))?;
        Ok(has_default_route(&text))
    })
    .map(|dev| format!("default route via {dev}"))
    .map_err(|last| {
        Error::failed(format!(
            "no default route after {} (expected via {gw} on {iface}; check the NetworkManager keyfile and the cable): {last}",
            human(limit)
        ))
    })
}
