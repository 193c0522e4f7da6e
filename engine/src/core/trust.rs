//! Which network elements the server trusts (the S-CSCF, I-CSCF,
//! application servers): by address, address and port, or network
//! (CIDR). What trust allows is decided by the services; this only says
//! whether a source is on the list.

use std::net::{IpAddr, SocketAddr};

/// One entry: a network (an address is a /32 or /128) and, optionally,
/// one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    net: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

impl Entry {
    fn contains(&self, src: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != src.port()) {
            return false;
        }
        match (self.net, src.ip()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V4(a)) => n.to_ipv4_mapped() == Some(a) && self.prefix >= 96,
            (IpAddr::V4(n), IpAddr::V6(a)) => a.to_ipv4_mapped().is_some_and(|a| prefix_eq(&n.octets(), &a.octets(), self.prefix)),
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// The trusted network elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustList {
    entries: Vec<Entry>,
}

impl TrustList {
    /// Parses entries of the forms `IP`, `IP:port`, `[IPv6]:port` and
    /// `IP/prefix`. The error names the bad entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustList, String> {
        let mut list = TrustList::default();
        for e in entries {
            list.entries.push(parse_entry(e.as_ref())?);
        }
        Ok(list)
    }

    /// A list of exact addresses (port 0: any port).
    pub fn of_addrs(addrs: &[SocketAddr]) -> TrustList {
        let entries =
            addrs.iter().map(|a| Entry { net: a.ip(), prefix: if a.is_ipv4() { 32 } else { 128 }, port: (a.port() != 0).then_some(a.port()) }).collect();
        TrustList { entries }
    }

    pub fn contains(&self, src: SocketAddr) -> bool {
        self.entries.iter().any(|e| e.contains(src))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_entry(s: &str) -> Result<Entry, String> {
    let bad = || format!("trusted entry {s:?}: expected IP, IP:port, [IPv6]:port or IP/prefix");
    if let Some((net, prefix)) = s.split_once('/') {
        let net: IpAddr = net.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(bad)?;
        return Ok(Entry { net, prefix, port: None });
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        let prefix = if a.is_ipv4() { 32 } else { 128 };
        return Ok(Entry { net: a.ip(), prefix, port: (a.port() != 0).then_some(a.port()) });
    }
    let ip: IpAddr = s.parse().map_err(|_| bad())?;
    Ok(Entry { net: ip, prefix: if ip.is_ipv4() { 32 } else { 128 }, port: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_ports_and_networks() {
        let t = TrustList::parse(&["192.0.2.10", "198.51.100.7:5060", "10.20.0.0/16", "2001:db8::/32", "[2001:db8:1::5]:5070"]).unwrap();
        assert!(t.contains(a("192.0.2.10:1234")), "any port of an address");
        assert!(!t.contains(a("192.0.2.11:5060")));
        assert!(t.contains(a("198.51.100.7:5060")) && !t.contains(a("198.51.100.7:5061")), "only that port");
        assert!(t.contains(a("10.20.255.1:5060")) && !t.contains(a("10.21.0.1:5060")), "the network");
        assert!(t.contains(a("[2001:db8:ffff::1]:5060")) && !t.contains(a("[2001:db9::1]:5060")));
        assert!(t.contains(a("[::ffff:10.20.1.1]:5060")), "an IPv4-mapped source");
        assert!(!TrustList::default().contains(a("127.0.0.1:5060")));
    }

    #[test]
    fn odd_prefixes_and_bad_entries() {
        let t = TrustList::parse(&["172.16.0.0/12", "0.0.0.0/0"]).unwrap();
        assert!(t.contains(a("172.31.1.1:1")) && t.contains(a("8.8.8.8:53")));
        let t = TrustList::parse(&["172.16.0.0/12"]).unwrap();
        assert!(!t.contains(a("172.32.0.1:1")));
        for bad in ["example.com", "10.0.0.0/33", "10.0.0.1:x", "::1/129"] {
            assert!(TrustList::parse(&[bad]).unwrap_err().contains(bad), "{bad}");
        }
        assert_eq!(TrustList::of_addrs(&[a("192.0.2.1:0")]), TrustList::parse(&["192.0.2.1"]).unwrap());
    }
}
