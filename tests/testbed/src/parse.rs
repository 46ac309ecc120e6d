//! Reading the gateway's view: nftables rules and `upnpc -l` output.

use std::fmt;
use std::net::SocketAddrV4;

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// A port mapping as the gateway holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port on the gateway's WAN side.
    pub external_port: u16,
    /// Where traffic goes on the LAN.
    pub internal: SocketAddrV4,
}

/// Reads miniupnpd's DNAT rules from `nft list chain inet filter prerouting_miniupnpd`, e.g.
/// `iif "wan0" @nh,72,8 0x6 th dport 4001 dnat ip to 10.77.0.2:4001` (`0x6` is TCP, `0x11`
/// UDP). Lines that are not such rules are skipped.
pub fn parse_nft_chain(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let after = |word: &str| {
                tokens.iter().position(|t| *t == word).and_then(|i| tokens.get(i + 1)).copied()
            };
            let protocol = match after("@nh,72,8")? {
                "0x6" | "6" | "tcp" => Protocol::Tcp,
                "0x11" | "17" | "udp" => Protocol::Udp,
                _ => return None,
            };
            let external_port = after("dport")?.parse().ok()?;
            let position = tokens.windows(3).position(|w| w == ["dnat", "ip", "to"])?;
            let internal = tokens.get(position + 3)?.parse().ok()?;
            Some(Mapping { protocol, external_port, internal })
        })
        .collect()
}

/// One line of `upnpc -l`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UpnpcEntry {
    /// The mapping.
    pub mapping: Mapping,
    /// Its description: miniupnpd names NAT-PMP and PCP mappings `NAT-PMP <port> <proto>` and
    /// `PCP <proto> <port>`-like strings; UPnP mappings carry the client's description.
    pub description: String,
    /// The remaining lease in seconds (0: permanent).
    pub lease: u32,
}

/// Reads the mapping table of `upnpc -l`, e.g.
/// ` 0 TCP  4001->10.77.0.2:4001  'NAT-PMP 4001 tcp' '' 0`.
pub fn parse_upnpc_list(text: &str) -> Vec<UpnpcEntry> {
    text.lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            tokens.next()?.parse::<u32>().ok()?;
            let protocol = match tokens.next()? {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => return None,
            };
            let (external, internal) = tokens.next()?.split_once("->")?;
            let mapping = Mapping {
                protocol,
                external_port: external.parse().ok()?,
                internal: internal.parse().ok()?,
            };
            let (_, rest) = line.split_once('\'')?;
            let (description, rest) = rest.split_once('\'')?;
            let lease = rest.split_whitespace().last()?.parse().ok()?;
            Some(UpnpcEntry { mapping, description: description.to_owned(), lease })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_rules() {
        let text = "table inet filter {\n\tchain prerouting_miniupnpd {\n\
            \t\tiif \"wan0\" @nh,72,8 0x6 th dport 4001 dnat ip to 10.77.0.2:4001\n\
            \t\tiif \"wan0\" @nh,72,8 0x11 th dport 5000 dnat ip to 10.77.0.2:4002\n\t}\n}\n";
        assert_eq!(
            parse_nft_chain(text),
            vec![
                Mapping {
                    protocol: Protocol::Tcp,
                    external_port: 4001,
                    internal: "10.77.0.2:4001".parse().unwrap(),
                },
                Mapping {
                    protocol: Protocol::Udp,
                    external_port: 5000,
                    internal: "10.77.0.2:4002".parse().unwrap(),
                },
            ]
        );
        assert!(
            parse_nft_chain("table inet filter {\n\tchain prerouting_miniupnpd {\n\t}\n}\n")
                .is_empty()
        );
    }

    #[test]
    fn upnpc_list() {
        let text = " i protocol exPort->inAddr:inPort description remoteHost leaseTime\n \
            0 TCP  4001->10.77.0.2:4001  'NAT-PMP 4001 tcp' '' 0\n \
            1 UDP 40000->10.77.0.2:4002  'sinew' '' 3599\n\
            GetGenericPortMappingEntry() returned 713 (SpecifiedArrayIndexInvalid)\n";
        let list = parse_upnpc_list(text);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].description, "NAT-PMP 4001 tcp");
        assert_eq!(list[0].lease, 0);
        assert_eq!(list[1].mapping.protocol, Protocol::Udp);
        assert_eq!(list[1].mapping.external_port, 40000);
        assert_eq!(list[1].mapping.internal, "10.77.0.2:4002".parse().unwrap());
        assert_eq!(list[1].description, "sinew");
        assert_eq!(list[1].lease, 3599);
    }
}
