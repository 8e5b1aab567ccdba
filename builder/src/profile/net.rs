//! IPv4 networks written as `a.b.c.d/len`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its network address and prefix length (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The network `addr/prefix_len`; `None` if the prefix is over 32 or host bits are set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        let net = Self { addr, prefix_len };
        (prefix_len <= 32 && net.network() == addr).then_some(net)
    }

    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// Network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// True if `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` is not a network: write it as address/prefix, e.g. 192.168.86.0/24")
        })?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` in `{s}` is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`{len}` in `{s}` is not a prefix length (0-32)"))?;
        let net = Self {
            addr,
            prefix_len: len,
        };
        Self::new(addr, len).ok_or_else(|| {
            format!(
                "`{s}` has host bits set; did you mean {}/{len}?",
                net.network()
            )
        })
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_answers_membership() {
        let n: Ipv4Cidr = "192.168.86.0/24".parse().unwrap();
        assert_eq!(n.network(), Ipv4Addr::new(192, 168, 86, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(192, 168, 86, 255));
        assert!(n.contains(Ipv4Addr::new(192, 168, 86, 33)));
        assert!(!n.contains(Ipv4Addr::new(192, 168, 87, 33)));
        assert_eq!(n.to_string(), "192.168.86.0/24");
    }

    #[test]
    fn rejects_bad_networks_with_a_hint() {
        assert_eq!(
            "192.168.86.5/24".parse::<Ipv4Cidr>().unwrap_err(),
            "`192.168.86.5/24` has host bits set; did you mean 192.168.86.0/24?"
        );
        assert!("192.168.86.0".parse::<Ipv4Cidr>().is_err());
        assert!("192.168.86.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0/0x".parse::<Ipv4Cidr>().is_err());
    }
}
