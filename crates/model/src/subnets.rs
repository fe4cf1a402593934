//! The request-only checks of a subnet (those that need no other rows):
//! IPv6 mode combinations, DHCP-related CIDR limits, DNS servers and host
//! routes. Checks against other subnets and pools run in the store.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::ipam::IpVersion;
use crate::resources::{HostRoute, Ipv6Mode};

/// Limits an operator may configure (Neutron's `max_dns_nameservers`,
/// `max_subnet_host_routes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetLimits {
    pub max_dns_nameservers: usize,
    pub max_host_routes: usize,
}

impl Default for SubnetLimits {
    fn default() -> Self {
        SubnetLimits { max_dns_nameservers: 5, max_host_routes: 20 }
    }
}

/// IPv6 RA and address modes must agree when both are set, need DHCP
/// enabled, and are meaningless on IPv4 (spec §3.1.5).
pub fn check_ipv6_modes(
    version: IpVersion,
    enable_dhcp: bool,
    ra: Option<Ipv6Mode>,
    address: Option<Ipv6Mode>,
) -> Result<()> {
    if ra.is_none() && address.is_none() {
        return Ok(());
    }
    if version == IpVersion::V4 {
        return Err(Error::InvalidInput(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False or ip_version is 4"
                .into(),
        ));
    }
    if !enable_dhcp {
        return Err(Error::InvalidInput(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False".into(),
        ));
    }
    if let (Some(r), Some(a)) = (ra, address)
        && r != a
    {
        return Err(Error::InvalidInput(format!(
            "ipv6_ra_mode set to '{}' with ipv6_address_mode set to '{}' is not valid. If both attributes are set, they must be the same value",
            r.as_str(),
            a.as_str()
        )));
    }
    Ok(())
}

/// EUI-64 needs a /64.
pub fn check_auto_address_prefix(cidr: &IpNet, ra: Option<Ipv6Mode>, address: Option<Ipv6Mode>) -> Result<()> {
    let auto = ra.is_some_and(Ipv6Mode::is_auto_address) || address.is_some_and(Ipv6Mode::is_auto_address);
    if auto && cidr.prefix_len() != 64 {
        return Err(Error::InvalidInput(format!(
            "Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
        )));
    }
    Ok(())
}

/// CIDRs DHCP cannot serve: too small, multicast, loopback, or an IPv4
/// range starting at 0.0.0.0.
pub fn check_dhcp_cidr(cidr: &IpNet) -> Result<()> {
    let too_small = match cidr {
        IpNet::V4(n) => n.prefix_len() > 30,
        IpNet::V6(n) => n.prefix_len() > 126,
    };
    if too_small {
        return Err(Error::InvalidInput(format!(
            "Invalid CIDR {cidr} for DHCP subnet; the prefix is too long to hold a DHCP port"
        )));
    }
    let net = cidr.network();
    if net.is_multicast() || net.is_loopback() {
        return Err(Error::InvalidInput(format!("Invalid CIDR {cidr} for DHCP subnet: multicast or loopback")));
    }
    if let IpNet::V4(n) = cidr
        && n.network().is_unspecified()
    {
        return Err(Error::InvalidInput(format!("Invalid CIDR {cidr} for DHCP subnet: it starts at 0.0.0.0")));
    }
    Ok(())
}

/// DNS servers: valid family, no duplicates, within the limit.
pub fn check_dns_nameservers(version: IpVersion, servers: &[IpAddr], limits: &SubnetLimits) -> Result<()> {
    let mut seen = HashSet::new();
    for s in servers {
        if IpVersion::of(s) != version {
            return Err(Error::attr(
                "dns_nameservers",
                format!("'{s}' is not a valid IPv{} nameserver", version.number()),
            ));
        }
        if !seen.insert(*s) {
            return Err(Error::attr("dns_nameservers", format!("Duplicate nameserver '{s}'")));
        }
    }
    if servers.len() > limits.max_dns_nameservers {
        return Err(Error::DnsNameServersExhausted { subnet: "subnet".into(), limit: limits.max_dns_nameservers });
    }
    Ok(())
}

/// Host routes: families match the subnet, destinations are networks and
/// not loopback, no duplicates, within the limit.
pub fn check_host_routes(version: IpVersion, routes: &[HostRoute], limits: &SubnetLimits) -> Result<()> {
    let mut seen = HashSet::new();
    for r in routes {
        if IpVersion::of_net(&r.destination) != version || IpVersion::of(&r.nexthop) != version {
            return Err(Error::InvalidInput(format!(
                "Host route destination {} and nexthop {} must be IPv{} like the subnet",
                r.destination,
                r.nexthop,
                version.number()
            )));
        }
        if r.destination.network().is_loopback() {
            return Err(Error::attr("host_routes", format!("'{}' is a loopback network", r.destination)));
        }
        if !seen.insert((r.destination, r.nexthop)) {
            return Err(Error::attr("host_routes", format!("Duplicate hostroute '{}'", r.destination)));
        }
    }
    if routes.len() > limits.max_host_routes {
        return Err(Error::HostRoutesExhausted { subnet: "subnet".into(), limit: limits.max_host_routes });
    }
    Ok(())
}

/// Whether two CIDRs share any address.
pub fn cidrs_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_six_mismatched_mode_pairs_are_rejected() {
        use Ipv6Mode::*;
        let modes = [Slaac, Dhcpv6Stateful, Dhcpv6Stateless];
        let mut rejected = 0;
        for ra in modes {
            for addr in modes {
                let r = check_ipv6_modes(IpVersion::V6, true, Some(ra), Some(addr));
                if ra == addr {
                    assert!(r.is_ok());
                } else {
                    assert!(r.is_err());
                    rejected += 1;
                }
            }
            assert!(check_ipv6_modes(IpVersion::V6, true, Some(ra), None).is_ok());
            assert!(check_ipv6_modes(IpVersion::V6, true, None, Some(ra)).is_ok());
            assert!(check_ipv6_modes(IpVersion::V6, false, Some(ra), None).is_err());
            assert!(check_ipv6_modes(IpVersion::V4, true, None, Some(ra)).is_err());
        }
        assert_eq!(rejected, 6);
    }

    #[test]
    fn slaac_needs_a_slash_64() {
        let n: IpNet = "2001:db8::/80".parse().unwrap();
        assert!(check_auto_address_prefix(&n, Some(Ipv6Mode::Slaac), None).is_err());
        assert!(check_auto_address_prefix(&n, Some(Ipv6Mode::Dhcpv6Stateful), None).is_ok());
        let n: IpNet = "2001:db8::/64".parse().unwrap();
        assert!(check_auto_address_prefix(&n, None, Some(Ipv6Mode::Dhcpv6Stateless)).is_ok());
    }

    #[test]
    fn dhcp_cidr_rules() {
        for bad in ["10.0.0.0/31", "2001:db8::/127", "224.0.0.0/24", "127.0.0.0/8", "0.0.0.0/24"] {
            assert!(check_dhcp_cidr(&bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in ["10.0.0.0/30", "2001:db8::/64", "192.168.1.0/24"] {
            assert!(check_dhcp_cidr(&good.parse().unwrap()).is_ok(), "{good}");
        }
    }

    #[test]
    fn nameserver_and_route_rules() {
        let lim = SubnetLimits::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(check_dns_nameservers(IpVersion::V4, &[ip("8.8.8.8"), ip("8.8.4.4")], &lim).is_ok());
        assert!(check_dns_nameservers(IpVersion::V4, &[ip("8.8.8.8"), ip("8.8.8.8")], &lim).is_err());
        assert!(check_dns_nameservers(IpVersion::V4, &[ip("::1")], &lim).is_err());
        let six: Vec<IpAddr> = (1..=6).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        assert!(matches!(check_dns_nameservers(IpVersion::V4, &six, &lim), Err(Error::DnsNameServersExhausted { .. })));
        let route = |d: &str, n: &str| HostRoute { destination: d.parse().unwrap(), nexthop: ip(n) };
        assert!(check_host_routes(IpVersion::V4, &[route("10.1.0.0/16", "10.0.0.9")], &lim).is_ok());
        assert!(check_host_routes(IpVersion::V4, &[route("127.0.0.0/8", "10.0.0.9")], &lim).is_err());
        assert!(check_host_routes(IpVersion::V6, &[route("10.1.0.0/16", "10.0.0.9")], &lim).is_err());
        assert!(
            check_host_routes(
                IpVersion::V4,
                &[route("10.1.0.0/16", "10.0.0.9"), route("10.1.0.0/16", "10.0.0.9")],
                &lim
            )
            .is_err()
        );
    }

    #[test]
    fn overlap_is_containment_either_way() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(cidrs_overlap(&n("10.0.0.0/16"), &n("10.0.5.0/24")));
        assert!(cidrs_overlap(&n("10.0.5.0/24"), &n("10.0.0.0/16")));
        assert!(!cidrs_overlap(&n("10.0.0.0/24"), &n("10.0.1.0/24")));
    }
}
