//! IP address management arithmetic: usable ranges, default gateways and
//! allocation pools, pool validation, EUI-64 (SLAAC) addresses and the choice
//! of a free address. Addresses are handled as `u128` so that IPv4 and IPv6
//! share one code path; `IpVersion` says how to print them.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rand::RngExt;

use crate::error::{Error, Result};
use crate::mac::MacAddress;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn number(self) -> i64 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        }
    }
    pub fn from_number(n: i64) -> Option<Self> {
        match n {
            4 => Some(IpVersion::V4),
            6 => Some(IpVersion::V6),
            _ => None,
        }
    }
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }
    pub fn of_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => IpVersion::V4,
            IpNet::V6(_) => IpVersion::V6,
        }
    }
    pub fn bits(self) -> u8 {
        match self {
            IpVersion::V4 => 32,
            IpVersion::V6 => 128,
        }
    }
    /// The ethertype name Neutron uses for this family.
    pub fn ethertype(self) -> &'static str {
        match self {
            IpVersion::V4 => "IPv4",
            IpVersion::V6 => "IPv6",
        }
    }
}

/// An address as a number, for arithmetic and ordering.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address `n` of the given family. `n` must fit the family.
pub fn from_u128(n: u128, version: IpVersion) -> IpAddr {
    match version {
        IpVersion::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The sortable storage key of an address: 16 big-endian bytes, so that
/// byte-wise comparison (SQLite BLOB, PostgreSQL bytea) is numeric order.
pub fn storage_key(ip: IpAddr) -> [u8; 16] {
    to_u128(ip).to_be_bytes()
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    pub first: u128,
    pub last: u128,
    pub version: IpVersion,
}

impl IpRange {
    pub fn new(first: IpAddr, last: IpAddr) -> Self {
        IpRange { first: to_u128(first), last: to_u128(last), version: IpVersion::of(&first) }
    }
    pub fn start_ip(&self) -> IpAddr {
        from_u128(self.first, self.version)
    }
    pub fn end_ip(&self) -> IpAddr {
        from_u128(self.last, self.version)
    }
    pub fn contains(&self, n: u128) -> bool {
        self.first <= n && n <= self.last
    }
    /// Number of addresses in the range (saturating at `u128::MAX`).
    pub fn size(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start_ip(), self.end_ip())
    }
}

fn net_bounds(cidr: &IpNet) -> (u128, u128) {
    (to_u128(cidr.network()), to_u128(cidr.broadcast()))
}

/// The addresses of a CIDR that may be handed out: IPv4 excludes the network
/// and broadcast addresses (except on /31 and /32, where every address is
/// usable); IPv6 excludes only the network (subnet-router anycast) address.
pub fn usable_range(cidr: &IpNet) -> Option<IpRange> {
    let (net, last) = net_bounds(cidr);
    let version = IpVersion::of_net(cidr);
    let (first, last) = match version {
        IpVersion::V4 if cidr.prefix_len() >= 31 => (net, last),
        IpVersion::V4 => (net + 1, last - 1),
        IpVersion::V6 if cidr.prefix_len() == 128 => (net, last),
        IpVersion::V6 => (net + 1, last),
    };
    (first <= last).then_some(IpRange { first, last, version })
}

/// The gateway a subnet gets when `gateway_ip` is not given: the first
/// address after the network address, for both families (Neutrino follows
/// the self-service guide here; upstream since Ussuri uses the IPv6 network
/// address itself). Tiny subnets (/31, /32, /127, /128) get none.
pub fn default_gateway(cidr: &IpNet) -> Option<IpAddr> {
    let too_small = match cidr {
        IpNet::V4(n) => n.prefix_len() >= 31,
        IpNet::V6(n) => n.prefix_len() >= 127,
    };
    if too_small {
        return None;
    }
    Some(from_u128(to_u128(cidr.network()) + 1, IpVersion::of_net(cidr)))
}

/// The default allocation pools: every usable address except the gateway,
/// split around it when it lies inside.
pub fn default_pools(cidr: &IpNet, gateway: Option<IpAddr>) -> Vec<IpRange> {
    let Some(usable) = usable_range(cidr) else { return vec![] };
    let Some(gw) = gateway.map(to_u128).filter(|g| usable.contains(*g)) else {
        return vec![usable];
    };
    let mut pools = Vec::with_capacity(2);
    if gw > usable.first {
        pools.push(IpRange { first: usable.first, last: gw - 1, ..usable });
    }
    if gw < usable.last {
        pools.push(IpRange { first: gw + 1, last: usable.last, ..usable });
    }
    pools
}

/// Checks user-supplied pools against the subnet, in Neutron's order:
/// start after end, family, bounds, overlaps, then the gateway.
/// Returns the pools sorted by start address.
pub fn validate_pools(cidr: &IpNet, pools: &[IpRange], gateway: Option<IpAddr>) -> Result<Vec<IpRange>> {
    let version = IpVersion::of_net(cidr);
    for pool in pools {
        if pool.first > pool.last {
            return Err(Error::InvalidAllocationPool(pool.to_string()));
        }
        if pool.version != version {
            return Err(Error::InvalidAllocationPool(pool.to_string()));
        }
    }
    let usable = usable_range(cidr);
    for pool in pools {
        let inside = usable.is_some_and(|u| u.contains(pool.first) && u.contains(pool.last));
        if !inside {
            return Err(Error::OutOfBoundsAllocationPool { pool: pool.to_string(), cidr: cidr.trunc().to_string() });
        }
    }
    let mut sorted = pools.to_vec();
    sorted.sort();
    for pair in sorted.windows(2) {
        if pair[0].overlaps(&pair[1]) {
            return Err(Error::OverlappingAllocationPools(format!("{} and {}", pair[0], pair[1])));
        }
    }
    if let Some(gw) = gateway
        && IpVersion::of(&gw) == version
    {
        let g = to_u128(gw);
        if let Some(pool) = sorted.iter().find(|p| p.contains(g)) {
            return Err(Error::GatewayConflictWithAllocationPools { gateway: gw.to_string(), pool: pool.to_string() });
        }
    }
    Ok(sorted)
}

/// Whether an IPv4 gateway is the network or broadcast address of its CIDR,
/// which Neutron refuses ("Gateway is not valid on subnet").
pub fn gateway_is_reserved(cidr: &IpNet, gateway: IpAddr) -> bool {
    match (cidr, gateway) {
        (IpNet::V4(n), IpAddr::V4(g)) if n.prefix_len() < 31 => g == n.network() || g == n.broadcast(),
        _ => false,
    }
}

/// Total number of addresses in a set of pools.
pub fn pools_size(pools: &[IpRange]) -> u128 {
    pools.iter().fold(0u128, |acc, p| acc.saturating_add(p.size()))
}

/// The EUI-64 (modified, RFC 4291 appendix A) address of `mac` in a /64.
pub fn eui64_address(prefix: &ipnet::Ipv6Net, mac: MacAddress) -> Ipv6Addr {
    let m = mac.0;
    let iid: u64 = u64::from_be_bytes([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    let net = u128::from(prefix.network()) & !(u64::MAX as u128);
    Ipv6Addr::from(net | iid as u128)
}

/// Whether an address looks like an EUI-64 address (`ff:fe` in the middle
/// of its interface id).
pub fn is_eui64(addr: Ipv6Addr) -> bool {
    (u128::from(addr) >> 24) & 0xffff == 0xfffe
}

/// How to choose among free addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Uniformly at random among the first `WINDOW` free addresses of the
    /// first pool that has any, as Neutron does for ordinary ports.
    Random,
    /// The lowest free address (Neutron's choice for DHCP ports).
    Lowest,
}

/// How many of the first free addresses a random choice draws from.
pub const RANDOM_WINDOW: usize = 1000;

/// Picks a free address from `pools` given the `allocated` set, or `None` if
/// every pool is full. Pools are walked in order; only allocated addresses
/// inside the chosen window are visited, so the cost is bounded by the
/// window plus the allocations in it, not by the size of the subnet.
pub fn choose_free(
    pools: &[IpRange],
    allocated: &BTreeSet<u128>,
    choice: Choice,
    rng: &mut impl rand::Rng,
) -> Option<u128> {
    for pool in pools {
        let mut free = Vec::new();
        let limit = match choice {
            Choice::Random => RANDOM_WINDOW,
            Choice::Lowest => 1,
        };
        let mut next = pool.first;
        let mut taken = allocated.range(pool.first..=pool.last).peekable();
        loop {
            while let Some(&&a) = taken.peek() {
                if a < next {
                    taken.next();
                } else {
                    break;
                }
            }
            if taken.peek().is_some_and(|&&a| a == next) {
                taken.next();
            } else {
                free.push(next);
                if free.len() == limit {
                    break;
                }
            }
            if next == pool.last {
                break;
            }
            next += 1;
        }
        if !free.is_empty() {
            let index = if free.len() == 1 { 0 } else { rng.random_range(0..free.len()) };
            return Some(free[index]);
        }
    }
    None
}

/// Whether an IPv6 RA/address mode means addresses come from SLAAC (EUI-64).
pub fn is_auto_address_mode(mode: Option<&str>) -> bool {
    matches!(mode, Some("slaac") | Some("dhcpv6-stateless"))
}

/// The free space of a subnet pool: `prefixes` minus `used`, as a list of
/// maximal CIDR blocks.
pub fn free_blocks(prefixes: &[IpNet], used: &[IpNet]) -> Vec<IpNet> {
    fn subtract(block: IpNet, used: &[IpNet], out: &mut Vec<IpNet>) {
        let overlapping: Vec<IpNet> =
            used.iter().filter(|u| block.contains(&u.network()) || u.contains(&block.network())).copied().collect();
        if overlapping.is_empty() {
            out.push(block);
            return;
        }
        if overlapping.iter().any(|u| u.contains(&block)) {
            return;
        }
        if let Ok(halves) = block.subnets(block.prefix_len() + 1) {
            for half in halves {
                subtract(half, &overlapping, out);
            }
        }
    }
    let mut out = Vec::new();
    for p in IpNet::aggregate(&prefixes.to_vec()) {
        subtract(p, used, &mut out);
    }
    out
}

/// Picks a block of `prefixlen` from the free space as Neutron does: the
/// smallest free blocks are tried first, and the first one big enough
/// yields its first sub-block of the requested size.
pub fn allocate_prefix(prefixes: &[IpNet], used: &[IpNet], prefixlen: u8) -> Option<IpNet> {
    let mut free = free_blocks(prefixes, used);
    free.sort_by(|a, b| b.prefix_len().cmp(&a.prefix_len()).then(a.network().cmp(&b.network())));
    free.into_iter()
        .find(|b| b.prefix_len() <= prefixlen)
        .and_then(|b| b.subnets(prefixlen).ok().and_then(|mut it| it.next()))
}

/// Whether `cidr` lies wholly inside the free space.
pub fn prefix_is_free(prefixes: &[IpNet], used: &[IpNet], cidr: &IpNet) -> bool {
    free_blocks(prefixes, used).iter().any(|b| b.contains(cidr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn pools_text(p: &[IpRange]) -> Vec<String> {
        p.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn default_gateway_and_pools_follow_the_spec_table() {
        // (cidr, gateway given (None = omitted), expected gateway, expected pools)
        type Case<'a> = (&'a str, Option<Option<&'a str>>, Option<&'a str>, &'a [&'a str]);
        let cases: &[Case] = &[
            ("10.0.0.0/24", None, Some("10.0.0.1"), &["10.0.0.2-10.0.0.254"]),
            ("10.0.0.0/24", Some(Some("10.0.0.254")), Some("10.0.0.254"), &["10.0.0.1-10.0.0.253"]),
            (
                "10.0.0.0/24",
                Some(Some("10.0.0.100")),
                Some("10.0.0.100"),
                &["10.0.0.1-10.0.0.99", "10.0.0.101-10.0.0.254"],
            ),
            ("10.0.0.0/24", Some(None), None, &["10.0.0.1-10.0.0.254"]),
            ("10.100.0.0/28", Some(Some("10.100.0.1")), Some("10.100.0.1"), &["10.100.0.2-10.100.0.14"]),
            ("10.0.0.0/30", None, Some("10.0.0.1"), &["10.0.0.2-10.0.0.2"]),
            ("10.0.0.0/8", Some(Some("192.168.0.1")), Some("192.168.0.1"), &["10.0.0.1-10.255.255.254"]),
            ("192.168.1.0/24", None, Some("192.168.1.1"), &["192.168.1.2-192.168.1.254"]),
            (
                "fd00:192:168:1::/64",
                None,
                Some("fd00:192:168:1::1"),
                &["fd00:192:168:1::2-fd00:192:168:1:ffff:ffff:ffff:ffff"],
            ),
            ("2001:db8::/64", Some(Some("fe80::1")), Some("fe80::1"), &["2001:db8::1-2001:db8::ffff:ffff:ffff:ffff"]),
        ];
        for (cidr, given, want_gw, want_pools) in cases {
            let cidr = net(cidr);
            let gw = match given {
                None => default_gateway(&cidr),
                Some(g) => g.map(ip),
            };
            assert_eq!(gw, want_gw.map(ip), "{cidr}");
            assert_eq!(pools_text(&default_pools(&cidr, gw)), *want_pools, "{cidr}");
        }
    }

    #[test]
    fn tiny_subnets_get_no_default_gateway_and_use_every_address() {
        assert_eq!(default_gateway(&net("10.0.0.0/31")), None);
        assert_eq!(pools_text(&default_pools(&net("10.0.0.0/31"), None)), ["10.0.0.0-10.0.0.1"]);
        assert_eq!(pools_text(&default_pools(&net("10.0.0.7/32"), None)), ["10.0.0.7-10.0.0.7"]);
    }

    #[test]
    fn pool_validation_reports_the_first_problem_in_neutron_order() {
        let cidr = net("10.0.0.0/24");
        let r = |a: &str, b: &str| IpRange::new(ip(a), ip(b));
        assert!(matches!(
            validate_pools(&cidr, &[r("10.0.0.9", "10.0.0.5")], None),
            Err(Error::InvalidAllocationPool(_))
        ));
        assert!(matches!(
            validate_pools(&cidr, &[r("10.0.0.0", "10.0.0.5")], None),
            Err(Error::OutOfBoundsAllocationPool { .. })
        ));
        assert!(matches!(
            validate_pools(&cidr, &[r("10.0.0.2", "10.0.0.255")], None),
            Err(Error::OutOfBoundsAllocationPool { .. })
        ));
        assert!(matches!(
            validate_pools(&cidr, &[r("10.0.0.2", "10.0.0.9"), r("10.0.0.9", "10.0.0.20")], None),
            Err(Error::OverlappingAllocationPools(_))
        ));
        assert!(matches!(
            validate_pools(&cidr, &[r("10.0.0.2", "10.0.0.9")], Some(ip("10.0.0.5"))),
            Err(Error::GatewayConflictWithAllocationPools { .. })
        ));
        let ok =
            validate_pools(&cidr, &[r("10.0.0.100", "10.0.0.200"), r("10.0.0.2", "10.0.0.9")], Some(ip("10.0.0.1")))
                .unwrap();
        assert_eq!(pools_text(&ok), ["10.0.0.2-10.0.0.9", "10.0.0.100-10.0.0.200"]);
    }

    #[test]
    fn prefixes_are_allocated_from_the_smallest_free_block() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let prefixes = [n("10.0.0.0/16")];
        let first = allocate_prefix(&prefixes, &[], 24).unwrap();
        assert_eq!(first, n("10.0.0.0/24"));
        let second = allocate_prefix(&prefixes, &[first], 24).unwrap();
        assert_eq!(second, n("10.0.1.0/24"));
        // A /26 goes into the smallest hole that fits it, not the big space.
        let used = [n("10.0.0.0/24"), n("10.0.1.0/25")];
        assert_eq!(allocate_prefix(&prefixes, &used, 26).unwrap(), n("10.0.1.128/26"));
        assert!(prefix_is_free(&prefixes, &used, &n("10.0.2.0/24")));
        assert!(!prefix_is_free(&prefixes, &used, &n("10.0.1.0/24")));
        assert_eq!(allocate_prefix(&[n("10.0.0.0/24")], &[n("10.0.0.0/24")], 28), None);
        let free = free_blocks(&[n("10.0.0.0/24"), n("10.0.1.0/24")], &[]);
        assert_eq!(free, vec![n("10.0.0.0/23")]);
    }

    #[test]
    fn eui64_matches_the_self_service_guide() {
        let prefix: ipnet::Ipv6Net = "fd00:192:168:1::/64".parse().unwrap();
        let mac: MacAddress = "fa:16:3e:30:9c:b0".parse().unwrap();
        let addr = eui64_address(&prefix, mac);
        assert_eq!(addr.to_string(), "fd00:192:168:1:f816:3eff:fe30:9cb0");
        assert!(is_eui64(addr));
        assert!(!is_eui64("fd00:192:168:1::2".parse().unwrap()));
    }

    #[test]
    fn reserved_ipv4_gateways_are_detected() {
        let cidr = net("10.0.0.0/24");
        assert!(gateway_is_reserved(&cidr, ip("10.0.0.0")));
        assert!(gateway_is_reserved(&cidr, ip("10.0.0.255")));
        assert!(!gateway_is_reserved(&cidr, ip("10.0.0.1")));
        assert!(!gateway_is_reserved(&net("2001:db8::/64"), ip("2001:db8::")));
    }

    #[test]
    fn lowest_choice_takes_the_first_hole() {
        let pools = default_pools(&net("10.0.0.0/24"), Some(ip("10.0.0.1")));
        let mut allocated: BTreeSet<u128> = BTreeSet::new();
        let mut rng = rand::rng();
        for a in ["10.0.0.2", "10.0.0.3", "10.0.0.5"] {
            allocated.insert(to_u128(ip(a)));
        }
        let got = choose_free(&pools, &allocated, Choice::Lowest, &mut rng).unwrap();
        assert_eq!(from_u128(got, IpVersion::V4), ip("10.0.0.4"));
    }

    #[test]
    fn random_choice_stays_in_the_window_and_never_repeats() {
        let cidr = net("10.0.0.0/20");
        let pools = default_pools(&cidr, default_gateway(&cidr));
        let mut allocated = BTreeSet::new();
        let mut rng = rand::rng();
        let total = pools_size(&pools) as usize;
        let mut sequential = true;
        for i in 0..total {
            let got = choose_free(&pools, &allocated, Choice::Random, &mut rng).unwrap();
            assert!(pools.iter().any(|p| p.contains(got)));
            assert!(allocated.insert(got), "handed out twice");
            if i < 50 && got != pools[0].first + i as u128 {
                sequential = false;
            }
        }
        assert!(!sequential, "random choice must not be sequential");
        assert_eq!(choose_free(&pools, &allocated, Choice::Random, &mut rng), None);
    }

    #[test]
    fn random_choice_only_draws_from_the_first_window_of_free_addresses() {
        let cidr = net("10.0.0.0/16");
        let pools = default_pools(&cidr, default_gateway(&cidr));
        let allocated = BTreeSet::new();
        let mut rng = rand::rng();
        for _ in 0..2000 {
            let got = choose_free(&pools, &allocated, Choice::Random, &mut rng).unwrap();
            assert!(got < pools[0].first + RANDOM_WINDOW as u128);
        }
    }
}
