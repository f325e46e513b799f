//! An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`), as `proxy_protocol.trusted` lists
//! them. Small enough to keep here rather than pull in a crate for one comparison per connection.

use super::values::Problems;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: an address whose bits past `prefix` are all zero, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network. An IPv4 address a dual-stack socket reports as
    /// IPv4-mapped IPv6 (`::ffff:10.1.2.3`) is compared as the IPv4 address it is, so that
    /// `10.0.0.0/8` covers it whatever the listener's family.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(ip) ^ u32::from(net);
                self.prefix == 0 || bits >> (32 - u32::from(self.prefix)) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u128::from(ip) ^ u128::from(net);
                self.prefix == 0 || bits >> (128 - u32::from(self.prefix)) == 0
            }
            _ => false,
        }
    }
}

/// The networks of a list of CIDRs given under `key`; each that does not parse is a problem
/// naming its place in the list.
pub(super) fn networks(key: &str, given: &[String], problems: &mut Problems) -> Vec<IpNet> {
    given
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match text.trim().parse() {
            Ok(net) => Some(net),
            Err(reason) => {
                problems.add(format!("{key}[{i}]"), format!("{text:?}: {reason}"));
                None
            }
        })
        .collect()
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    /// Why the text is not a network, for a config problem.
    type Err = String;

    /// `ADDR/PREFIX`, or a bare address for that one address. Host bits past the prefix are
    /// refused rather than cleared: `10.0.0.1/8` is more likely a typo than a way to write
    /// `10.0.0.0/8`, and trust is not the place to guess.
    fn from_str(text: &str) -> Result<IpNet, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| match prefix_text {
            None => "not an IP address or a network like 10.0.0.0/8".to_string(),
            Some(_) => format!("{addr_text:?} is not an IP address"),
        })?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("prefix length {p} is not between 0 and {max}")),
                }
            }
            Some(p) => return Err(format!("prefix length {p:?} is not a number")),
        };
        let net = IpNet { addr, prefix };
        let host_bits = match addr {
            IpAddr::V4(a) => prefix < 32 && u32::from(a) << prefix != 0,
            IpAddr::V6(a) => prefix < 128 && u128::from(a) << prefix != 0,
        };
        if host_bits {
            return Err(format!(
                "has bits set past the /{prefix} prefix; write the network address, e.g. {}",
                IpNet {
                    addr: network_of(addr, prefix),
                    prefix
                }
            ));
        }
        Ok(net)
    }
}

fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn membership_follows_the_prefix() {
        let ten = net("10.0.0.0/8");
        assert!(ten.contains(ip("10.0.0.0")));
        assert!(ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")));
        assert!(!ten.contains(ip("9.255.255.255")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6");
        assert!(!ten.contains(ip("::a00:1")), "IPv6 is not IPv4");

        let one = net("127.0.0.1");
        assert_eq!(one, net("127.0.0.1/32"));
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));

        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));

        let v6 = net("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(net("::1/128").contains(ip("::1")));
        assert!(!net("::1/128").contains(ip("::2")));
        assert!(net("10.1.2.2/31").contains(ip("10.1.2.3")));
        assert!(!net("10.1.2.2/31").contains(ip("10.1.2.4")));
    }

    #[test]
    fn bad_networks_say_why() {
        for (text, words) in [
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("10.0.0.0/33", "between 0 and 32"),
            ("::/129", "between 0 and 128"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0.0/0008", "not a number"),
            ("10.0.0/8", "not an IP address"),
            ("localhost", "not an IP address"),
            ("", "not an IP address"),
            ("2001:db8::1/32", "2001:db8::/32"),
        ] {
            let error = text.parse::<IpNet>().expect_err(text);
            assert!(error.contains(words), "{text}: {error}");
        }
    }
}
