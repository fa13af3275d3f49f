//! What the agent tells the control plane about the edge host: its name and the addresses where
//! published ports are reached. Read through `if-addrs` (getifaddrs), since this workspace has
//! no `unsafe` code of its own.

use std::net::IpAddr;

/// The host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), empty when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The host's non-loopback, non-link-local interface addresses, IPv4 first, deduplicated.
pub fn addresses() -> Vec<String> {
    let mut ips: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(list) => list
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !link_local(ip))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the host's interface addresses");
            Vec::new()
        }
    };
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips.into_iter().map(|ip| ip.to_string()).collect()
}

fn link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_readable_here() {
        assert!(!hostname().is_empty());
        for a in addresses() {
            let ip: IpAddr = a.parse().unwrap();
            assert!(!ip.is_loopback(), "{a}");
        }
    }
}
