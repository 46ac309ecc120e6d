//! The IPv4 default gateway, from `/proc/net/route`.

use std::net::Ipv4Addr;

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// The gateway of the IPv4 default route with the lowest metric, read from the calling
/// thread's `/proc/thread-self/net/route` (Linux; `/proc/net/route` is the main thread's, which
/// differs when a thread entered another network namespace). `None` when there is none or the
/// file cannot be read.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/thread-self/net/route")
        .or_else(|_| std::fs::read_to_string("/proc/net/route"))
        .ok()?;
    parse_default_gateway(&table)
}

/// Finds the default gateway in the text of `/proc/net/route`: the up route with destination
/// and mask 0 and the gateway flag, lowest metric first. Addresses are hexadecimal numbers in
/// the host's byte order, as the kernel prints them. Lines that do not parse are skipped.
pub fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| fields.get(i).and_then(|f| u32::from_str_radix(f, 16).ok());
            let (destination, gateway, flags, mask) = (hex(1)?, hex(2)?, hex(3)?, hex(7)?);
            let metric: u32 = fields.get(6)?.parse().ok()?;
            let wanted = RTF_UP | RTF_GATEWAY;
            (destination == 0 && mask == 0 && flags & wanted == wanted && gateway != 0)
                .then(|| (metric, Ipv4Addr::from(gateway.to_ne_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gateway)| gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(address: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(address))
    }

    /// Interface, destination, gateway, flags, metric, mask.
    type Row<'a> = (&'a str, [u8; 4], [u8; 4], u32, u32, [u8; 4]);

    fn table(rows: &[Row<'_>]) -> String {
        let mut out = String::from(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        for (iface, destination, gateway, flags, metric, mask) in rows {
            out.push_str(&format!(
                "{iface}\t{}\t{}\t{flags:04X}\t0\t0\t{metric}\t{}\t0\t0\t0\n",
                hex(*destination),
                hex(*gateway),
                hex(*mask)
            ));
        }
        out
    }

    #[test]
    fn finds_the_default_route() {
        let text = table(&[
            ("lan1", [10, 77, 0, 0], [0, 0, 0, 0], 0x1, 0, [255, 255, 255, 0]),
            ("lan1", [0, 0, 0, 0], [10, 77, 0, 1], 0x3, 0, [0, 0, 0, 0]),
        ]);
        assert_eq!(parse_default_gateway(&text), Some(Ipv4Addr::new(10, 77, 0, 1)));
    }

    #[test]
    fn lowest_metric_wins_and_down_routes_are_skipped() {
        let text = table(&[
            ("eth0", [0, 0, 0, 0], [192, 168, 1, 1], 0x3, 600, [0, 0, 0, 0]),
            ("wlan0", [0, 0, 0, 0], [192, 168, 2, 1], 0x3, 100, [0, 0, 0, 0]),
            ("eth1", [0, 0, 0, 0], [192, 168, 3, 1], 0x2, 1, [0, 0, 0, 0]),
        ]);
        assert_eq!(parse_default_gateway(&text), Some(Ipv4Addr::new(192, 168, 2, 1)));
    }

    #[test]
    fn no_default_route() {
        let text = table(&[("lan1", [10, 77, 0, 0], [0, 0, 0, 0], 0x1, 0, [255, 255, 255, 0])]);
        assert_eq!(parse_default_gateway(&text), None);
        assert_eq!(parse_default_gateway(""), None);
        assert_eq!(parse_default_gateway("header\ngarbage line\n\t\t\n"), None);
        // A default route without the gateway flag (a device route) has no gateway.
        let text = table(&[("tun0", [0, 0, 0, 0], [0, 0, 0, 0], 0x1, 0, [0, 0, 0, 0])]);
        assert_eq!(parse_default_gateway(&text), None);
    }

    #[test]
    fn reads_this_machine_without_panicking() {
        let _ = default_gateway();
    }
}
