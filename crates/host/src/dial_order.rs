//! The order in which a peer's addresses are dialled.

use sinew_types::{Addr, Host, Scheme};

/// How much a transport is preferred when a peer has addresses on several: QUIC (its own
/// multiplexing, no head-of-line blocking, a 1-RTT handshake), then TCP, then WebSocket (for
/// networks that only pass web traffic), then the in-process transport.
fn scheme_rank(scheme: Scheme) -> u8 {
    match scheme {
        Scheme::Quic => 0,
        Scheme::Tcp => 1,
        Scheme::Ws => 2,
        Scheme::Wss => 3,
        Scheme::Memory => 4,
        _ => 5,
    }
}

/// Orders `addrs` for dialling: by transport ([`scheme_rank`], stable), and within one
/// transport IPv6 and IPv4 alternating, IPv6 first (as Happy Eyeballs, RFC 8305, interleaves
/// address families), then DNS names in their given order. The driver dials the first, then
/// each next one a short stagger later (or at once after a failure), and keeps the first that
/// authenticates.
pub(crate) fn dial_order(addrs: Vec<Addr>) -> Vec<Addr> {
    let mut ordered = Vec::with_capacity(addrs.len());
    let mut schemes: Vec<Scheme> = addrs.iter().map(Addr::scheme).collect();
    schemes.sort_by_key(|s| scheme_rank(*s));
    schemes.dedup();
    for scheme in schemes {
        let of = addrs.iter().filter(|a| a.scheme() == scheme);
        let (mut v6, mut v4, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for addr in of {
            match addr.host() {
                Host::Ip(ip) if ip.is_ipv6() => v6.push(addr.clone()),
                Host::Ip(_) => v4.push(addr.clone()),
                _ => names.push(addr.clone()),
            }
        }
        let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
        loop {
            let (a, b) = (v6.next(), v4.next());
            if a.is_none() && b.is_none() {
                break;
            }
            ordered.extend(a);
            ordered.extend(b);
        }
        ordered.extend(names);
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Addr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn quic_first_then_tcp_then_websocket() {
        let given = addrs(&[
            "ws://192.0.2.1:80/p",
            "tcp://192.0.2.1:4001",
            "wss://192.0.2.1:443/p",
            "quic://192.0.2.1:4001",
        ]);
        let expected = addrs(&[
            "quic://192.0.2.1:4001",
            "tcp://192.0.2.1:4001",
            "ws://192.0.2.1:80/p",
            "wss://192.0.2.1:443/p",
        ]);
        assert_eq!(dial_order(given), expected);
    }

    #[test]
    fn families_alternate_ipv6_first_and_names_last_within_a_transport() {
        let given = addrs(&[
            "tcp://192.0.2.1:1",
            "tcp://example.com:3",
            "tcp://192.0.2.2:2",
            "tcp://[2001:db8::1]:4",
            "quic://192.0.2.9:9",
        ]);
        let expected = addrs(&[
            "quic://192.0.2.9:9",
            "tcp://[2001:db8::1]:4",
            "tcp://192.0.2.1:1",
            "tcp://192.0.2.2:2",
            "tcp://example.com:3",
        ]);
        assert_eq!(dial_order(given), expected);
    }

    #[test]
    fn nothing_is_lost_or_added() {
        let given = addrs(&["memory://127.0.0.1:5", "tcp://10.0.0.1:1", "tcp://10.0.0.1:1"]);
        let ordered = dial_order(given.clone());
        assert_eq!(ordered.len(), given.len());
        assert_eq!(ordered[0].scheme(), Scheme::Tcp);
    }
}
