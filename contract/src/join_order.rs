//! The one rule of whom a node joins through, shared by the builder (the plan's
//! `join ... via` list) and the agent (the peers it probes): the control-plane VIP
//! first when the cluster has one, then every other server in the cluster's order
//! (bootstrap server first).

use std::net::Ipv4Addr;

/// A join target: `name` is `None` for the VIP, else the server's node name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTarget<'a> {
    /// The server's node name; `None` for the VIP.
    pub name: Option<&'a str>,
    /// Where to reach it.
    pub ip: Ipv4Addr,
}

/// The targets node `me` tries in order: `vip` first (when set), then every server of
/// `servers` (name, IP; bootstrap first) but `me` itself. An agent passes a name no
/// server has (e.g. its own) and gets every server.
pub fn join_order<'a>(
    vip: Option<Ipv4Addr>,
    servers: impl IntoIterator<Item = (&'a str, Ipv4Addr)>,
    me: &str,
) -> Vec<JoinTarget<'a>> {
    vip.map(|ip| JoinTarget { name: None, ip })
        .into_iter()
        .chain(
            servers
                .into_iter()
                .filter(|(name, _)| *name != me)
                .map(|(name, ip)| JoinTarget {
                    name: Some(name),
                    ip,
                }),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    #[test]
    fn vip_first_then_the_other_servers_in_order() {
        let servers = [("s1", ip(1)), ("s2", ip(2)), ("s3", ip(3))];
        let order = join_order(Some(ip(9)), servers, "s2");
        let ips: Vec<Ipv4Addr> = order.iter().map(|t| t.ip).collect();
        assert_eq!(ips, [ip(9), ip(1), ip(3)]);
        assert_eq!(order[0].name, None);
        assert_eq!(order[2].name, Some("s3"));
    }

    #[test]
    fn without_vip_an_agent_gets_every_server() {
        let servers = [("s1", ip(1)), ("s2", ip(2))];
        let ips: Vec<Ipv4Addr> = join_order(None, servers, "worker-1")
            .iter()
            .map(|t| t.ip)
            .collect();
        assert_eq!(ips, [ip(1), ip(2)]);
    }
}
