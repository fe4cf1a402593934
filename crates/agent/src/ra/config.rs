//! What each router interface advertises, from the host view: the pure
//! part of the RA sender.
//!
//! Neutron's rules (its radvd template): a subnet is advertised when it
//! has an `ipv6_ra_mode`; its prefix is on-link, and autonomous (A flag,
//! hosts make SLAAC addresses) for `slaac` and `dhcpv6-stateless` but not
//! for `dhcpv6-stateful`; the M flag is set when a subnet of the interface
//! is `dhcpv6-stateful`, the O flag when one is `dhcpv6-stateless` or
//! `dhcpv6-stateful` (other configuration comes from DHCPv6 either way).

use ipnet::{IpNet, Ipv6Net};
use neutrino_model::resources::Ipv6Mode;
use neutrino_model::{MacAddress, RouterId};
use neutrino_proto::{HostView, device_name};
use std::collections::BTreeMap;

use super::packet::{PrefixInformation, RouterAdvertisement};

/// Seconds hosts keep a router as their default router (radvd's default,
/// 3 x its maximum interval); never 0 while serving.
pub const ROUTER_LIFETIME: u16 = 1800;
/// radvd's defaults for a prefix.
pub const VALID_LIFETIME: u32 = 86_400;
pub const PREFERRED_LIFETIME: u32 = 14_400;
/// The hop limit hosts are told to use.
pub const CUR_HOP_LIMIT: u8 = 64;

/// Where an advertiser runs: (namespace, device).
pub type RaPlace = (String, String);

/// One prefix an interface advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RaPrefix {
    pub prefix: Ipv6Net,
    /// The A flag: hosts make SLAAC addresses in it.
    pub autonomous: bool,
}

/// What one interface advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaConfig {
    /// The interface's MAC, sent as the source link-layer address.
    pub mac: MacAddress,
    /// The network's MTU; `None`: no MTU option.
    pub mtu: Option<u32>,
    /// M flag.
    pub managed: bool,
    /// O flag.
    pub other: bool,
    /// Sorted, without duplicates.
    pub prefixes: Vec<RaPrefix>,
    pub router_lifetime: u16,
}

impl RaConfig {
    /// The configuration for an interface with `mac` and `mtu` whose
    /// subnets are `subnets` (prefix, ipv6_ra_mode); `None` when none of
    /// them is an IPv6 subnet with an `ipv6_ra_mode`.
    pub fn for_subnets(
        mac: MacAddress,
        mtu: Option<u32>,
        subnets: impl IntoIterator<Item = (IpNet, Option<Ipv6Mode>)>,
    ) -> Option<RaConfig> {
        let mut config =
            RaConfig { mac, mtu, managed: false, other: false, prefixes: vec![], router_lifetime: ROUTER_LIFETIME };
        for (cidr, mode) in subnets {
            let (IpNet::V6(net), Some(mode)) = (cidr, mode) else {
                continue;
            };
            match mode {
                Ipv6Mode::Slaac => {}
                Ipv6Mode::Dhcpv6Stateless => config.other = true,
                Ipv6Mode::Dhcpv6Stateful => {
                    config.managed = true;
                    config.other = true;
                }
            }
            config.prefixes.push(RaPrefix { prefix: net.trunc(), autonomous: mode.is_auto_address() });
        }
        config.prefixes.sort();
        config.prefixes.dedup();
        (!config.prefixes.is_empty()).then_some(config)
    }

    /// The advertisement to send; `router_lifetime` is the configured one
    /// except in the final advertisement of an interface that stops.
    pub fn advertisement(&self, router_lifetime: u16) -> RouterAdvertisement {
        RouterAdvertisement {
            cur_hop_limit: CUR_HOP_LIMIT,
            managed: self.managed,
            other: self.other,
            router_lifetime,
            reachable_time: 0,
            retrans_timer: 0,
            source_link_layer: Some(self.mac.0),
            mtu: self.mtu,
            prefixes: self
                .prefixes
                .iter()
                .map(|p| PrefixInformation {
                    prefix: p.prefix,
                    on_link: true,
                    autonomous: p.autonomous,
                    valid_lifetime: VALID_LIFETIME,
                    preferred_lifetime: PREFERRED_LIFETIME,
                })
                .collect(),
        }
    }
}

/// `<prefix>qrouter-<router id>`: the namespace of a router (Neutron's
/// name).
pub fn router_netns(netns_prefix: &str, router: &RouterId) -> String {
    format!("{netns_prefix}qrouter-{router}")
}

/// Every `qr-` interface of the view's routers that advertises, with what
/// it advertises. An interface whose port or network is missing from the
/// view is left out (the view lists both for every router port).
pub fn wanted(view: &HostView, netns_prefix: &str) -> BTreeMap<RaPlace, RaConfig> {
    let mut wanted = BTreeMap::new();
    for (router, r) in &view.routers {
        for interface in &r.interfaces {
            let Some(port) = view.ports.get(&interface.port_id) else {
                continue;
            };
            let mtu = view.networks.get(&interface.network_id).map(|n| n.mtu).filter(|&m| m >= 1280);
            let subnets = interface.subnets.iter().map(|s| (s.cidr, s.ipv6_ra_mode));
            let Some(config) = RaConfig::for_subnets(port.mac, mtu, subnets) else {
                continue;
            };
            wanted.insert((router_netns(netns_prefix, router), device_name("qr-", &interface.port_id)), config);
        }
    }
    wanted
}

#[cfg(test)]
mod tests;
