//! Network peers: an exact address, an address range (CIDR), any peer, or a unix socket path
//! pattern.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::pattern;

/// The other side of a network entry, written as text in documents: `*`, `10.0.0.7`,
/// `10.0.0.0/8`, `::1`, `fd00::/8`, or a unix socket path (pattern) starting with `/` or `@`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Peer {
    Any,
    Range { addr: IpAddr, prefix: u8 },
    Path(String),
}

impl Peer {
    /// A single address (a range of full length).
    pub fn addr(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Peer::Range { addr, prefix }
    }

    /// Whether this entry covers `other` (an observed peer, usually an exact address).
    pub fn covers(&self, other: &Peer) -> bool {
        match (self, other) {
            (Peer::Any, _) => true,
            (Peer::Range { .. }, Peer::Range { addr, prefix }) => {
                self.contains(*addr) && self.prefix_len() <= *prefix
            }
            (Peer::Path(pat), Peer::Path(path)) => pattern::matches(pat, path),
            _ => false,
        }
    }

    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Peer::Any, _) => true,
            (
                Peer::Range {
                    addr: IpAddr::V4(net),
                    prefix,
                },
                IpAddr::V4(ip),
            ) => {
                masked(u32::from(*net).into(), 32, *prefix)
                    == masked(u32::from(ip).into(), 32, *prefix)
            }
            (
                Peer::Range {
                    addr: IpAddr::V6(net),
                    prefix,
                },
                IpAddr::V6(ip),
            ) => masked(u128::from(*net), 128, *prefix) == masked(u128::from(ip), 128, *prefix),
            _ => false,
        }
    }

    fn prefix_len(&self) -> u8 {
        match self {
            Peer::Range { prefix, .. } => *prefix,
            _ => 0,
        }
    }
}

fn masked(value: u128, bits: u8, prefix: u8) -> u128 {
    let prefix = prefix.min(bits);
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(bits - prefix);
    (value >> shift) << shift
}

impl FromStr for Peer {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, PolicyError> {
        if text == "*" {
            return Ok(Peer::Any);
        }
        if text.starts_with('/') || text.starts_with('@') {
            return Ok(Peer::Path(text.to_string()));
        }
        let bad = |reason: &str| PolicyError::invalid(format!("network peer {text:?}"), reason);
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("use *, an IP address, ADDR/PREFIX or a unix socket path"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("the prefix length is out of range"))?,
            None => max,
        };
        Ok(Peer::Range { addr, prefix })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Any => f.write_str("*"),
            Peer::Range { addr, prefix } if Some(*prefix) == full_len(addr) => write!(f, "{addr}"),
            Peer::Range { addr, prefix } => write!(f, "{addr}/{prefix}"),
            Peer::Path(path) => f.write_str(path),
        }
    }
}

fn full_len(addr: &IpAddr) -> Option<u8> {
    Some(if addr.is_ipv4() { 32 } else { 128 })
}

impl TryFrom<String> for Peer {
    type Error = PolicyError;
    fn try_from(text: String) -> Result<Self, PolicyError> {
        text.parse()
    }
}

impl From<Peer> for String {
    fn from(peer: Peer) -> String {
        peer.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> Peer {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_cover_addresses_inside_only() {
        assert!(peer("10.0.0.0/8").covers(&peer("10.1.2.3")));
        assert!(!peer("10.0.0.0/8").covers(&peer("11.1.2.3")));
        assert!(peer("10.0.0.0/8").covers(&peer("10.2.0.0/16")));
        assert!(!peer("10.2.0.0/16").covers(&peer("10.0.0.0/8")));
        assert!(peer("fd00::/8").covers(&peer("fd12::1")));
        assert!(!peer("127.0.0.1").covers(&peer("::1")));
        assert!(peer("*").covers(&peer("/run/x.sock")));
        assert!(peer("0.0.0.0/0").covers(&peer("8.8.8.8")));
    }

    #[test]
    fn text_round_trips() {
        for text in [
            "*",
            "127.0.0.1",
            "10.0.0.0/8",
            "::1",
            "fd00::/8",
            "/run/*.sock",
            "@abs",
        ] {
            assert_eq!(peer(text).to_string(), text);
        }
        assert!("10.0.0.0/33".parse::<Peer>().is_err());
        assert!("example.com".parse::<Peer>().is_err());
    }
}
