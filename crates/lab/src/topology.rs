//! Who is where in a lab: namespace names, addresses, and the wiring that
//! makes them one underlay and one provider network.
//!
//! ```text
//!  P u:   br-u (underlay 172.31.0.0/24)              br-p (flat "provider" network)
//!          |ctl      |u-h1     |u-h2 ...              |p-h1     |p-h2 ...   |p-ext
//!  P ctl eth0 .2   P h1 eth0 .11  P h2 eth0 .12      eth1      eth1      P ext eth0
//!  (server :9696)  (agent)        (agent)           (no address, for the    203.0.113.1/24
//!                                                     agents' bridge mapping) 2001:db8:ff::1/64
//! ```
//!
//! Every veth is created with both ends inside lab namespaces: the root
//! namespace never gets a link, an address or a route.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};
use crate::netns;

/// The controller's underlay address; the servers listen there.
pub const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);
/// Server 1's port; server `i` listens on `API_PORT + i - 1`.
pub const API_PORT: u16 = 9696;
/// At most this many servers in one controller.
pub const MAX_SERVERS: usize = 16;
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// The upstream router of the provider network, in the external namespace.
pub const EXTERNAL_IPV4: &str = "203.0.113.1/24";
pub const EXTERNAL_IPV6: &str = "2001:db8:ff::1/64";
/// The physical network name the agents map to their `eth1`.
pub const PROVIDER_PHYSNET: &str = "provider";
/// Host `i` gets 172.31.0.(10+i), so the /24 holds at most this many hosts.
pub const MAX_HOSTS: usize = 200;

/// Names and addresses of one lab, from its prefix and host count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    hosts: usize,
}

/// What a `lab exec` target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Underlay,
    Controller,
    External,
    /// 1-based host index.
    Host(usize),
    /// An instance, or any other namespace of the lab (for example an
    /// agent-made `h1-qdhcp-<network>`): resolved when it is used.
    Other(String),
}

impl Target {
    pub fn parse(target: &str) -> Target {
        match target {
            "underlay" | "u" => Target::Underlay,
            "controller" | "ctl" => Target::Controller,
            "external" | "ext" => Target::External,
            _ => match host_index(target) {
                Some(i) => Target::Host(i),
                None => Target::Other(target.to_string()),
            },
        }
    }
}

/// `h<i>` -> `i` (1-based).
pub fn host_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix('h')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A prefix selects every namespace the lab owns and deletes, so it must
/// not be empty and must only hold characters that are safe in paths,
/// namespace names and shell commands.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !prefix.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "bad lab prefix {prefix:?}: 1 to 32 characters out of [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}

/// Instance names become namespace names and lab targets.
pub fn validate_instance_name(name: &str) -> Result<()> {
    let reserved = !matches!(Target::parse(name), Target::Other(_));
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if !ok {
        return Err(Error::Invalid(format!("bad instance name {name:?}: 1 to 40 characters out of [A-Za-z0-9._-]")));
    }
    if reserved {
        return Err(Error::Invalid(format!("instance name {name:?} is taken by a lab target (controller, hN, ...)")));
    }
    Ok(())
}

/// The host-side device of a port, as the agent names it (DESIGN.md 4):
/// `tap` + the first 11 characters of the port id.
pub fn tap_name(port_id: &str) -> String {
    let head: String = port_id.chars().take(11).collect();
    format!("tap{head}")
}

impl Topology {
    pub fn new(prefix: &str, hosts: usize) -> Result<Self> {
        validate_prefix(prefix)?;
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(Error::Invalid(format!("a lab has 1 to {MAX_HOSTS} hosts, not {hosts}")));
        }
        Ok(Topology { prefix: prefix.to_string(), hosts })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn hosts(&self) -> usize {
        self.hosts
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn underlay(&self) -> String {
        self.ns("u")
    }

    pub fn controller(&self) -> String {
        self.ns("ctl")
    }

    pub fn external(&self) -> String {
        self.ns("ext")
    }

    /// Namespace of host `i` (1-based).
    pub fn host(&self, i: usize) -> String {
        self.ns(&host_name(i))
    }

    /// Namespace of instance `name`.
    pub fn instance(&self, name: &str) -> String {
        self.ns(&format!("vm-{name}"))
    }

    /// What host `i`'s agent puts before the namespaces it makes, so that
    /// two simulated hosts can both hold `qrouter-<id>` (lab README 8) and
    /// `lab down` finds them by the lab prefix.
    pub fn agent_netns_prefix(&self, i: usize) -> String {
        format!("{}-", self.host(i))
    }

    /// The namespace host `i`'s agent makes for router `router_id`
    /// (`<P>h<i>-qrouter-<id>`, Neutron's name behind the agent's prefix).
    pub fn router_namespace(&self, i: usize, router_id: &str) -> String {
        format!("{}qrouter-{router_id}", self.agent_netns_prefix(i))
    }

    /// The 1-based index of host `name` (`h3` -> 3), if this lab has it.
    pub fn host_by_name(&self, name: &str) -> Result<usize> {
        match host_index(name) {
            Some(i) if i <= self.hosts => Ok(i),
            _ => Err(Error::Invalid(format!("no host {name:?} in lab {} (h1..h{})", self.prefix, self.hosts))),
        }
    }

    /// The fixed namespace of a target; `Other` targets need a look at what exists.
    pub fn fixed_namespace(&self, target: &Target) -> Result<Option<String>> {
        Ok(match target {
            Target::Underlay => Some(self.underlay()),
            Target::Controller => Some(self.controller()),
            Target::External => Some(self.external()),
            Target::Host(i) if *i <= self.hosts => Some(self.host(*i)),
            Target::Host(i) => return Err(Error::Invalid(format!("no host h{i} in lab {}", self.prefix))),
            Target::Other(_) => None,
        })
    }

    /// Every namespace `up` creates, underlay first.
    pub fn base_namespaces(&self) -> Vec<String> {
        let mut all = vec![self.underlay(), self.controller(), self.external()];
        all.extend((1..=self.hosts).map(|i| self.host(i)));
        all
    }

    /// Server 1's URL.
    pub fn server_url(&self) -> String {
        self.server_url_at(1)
    }

    /// Server `i`'s URL (1-based).
    pub fn server_url_at(&self, i: usize) -> String {
        format!("http://{CONTROLLER_IP}:{}", server_port(i))
    }
}

/// Server `i`'s port (1-based): 9696, 9697, ...
pub fn server_port(i: usize) -> u16 {
    let offset = u16::try_from(i.clamp(1, MAX_SERVERS) - 1).expect("bounded by MAX_SERVERS");
    API_PORT + offset
}

pub fn host_name(i: usize) -> String {
    format!("h{i}")
}

/// Host `i`'s underlay (tunnel) address.
pub fn host_ip(i: usize) -> Ipv4Addr {
    let last = u8::try_from(10 + i).expect("host index bounded by MAX_HOSTS");
    Ipv4Addr::new(172, 31, 0, last)
}

/// Creates the namespaces and wires them (blocking: it runs `ip`).
pub fn build(topo: &Topology) -> Result<()> {
    for ns in topo.base_namespaces() {
        netns::add(&ns)?;
        netns::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    let u = topo.underlay();
    for bridge in ["br-u", "br-p"] {
        netns::ip(&["-n", &u, "link", "add", bridge, "type", "bridge"])?;
        // The switches carry traffic; an IPv6 link-local of their own would
        // only add MLD noise to every capture.
        netns::ip(&["-n", &u, "link", "set", bridge, "addrgenmode", "none"])?;
        netns::ip(&["-n", &u, "link", "set", bridge, "up"])?;
    }

    let underlay_cidr = |ip: Ipv4Addr| format!("{ip}/{UNDERLAY_PREFIX_LEN}");
    let ctl = topo.controller();
    plug(&u, "ctl", "br-u", &ctl, "eth0")?;
    netns::ip(&["-n", &ctl, "addr", "add", &underlay_cidr(CONTROLLER_IP), "dev", "eth0"])?;
    netns::ip(&["-n", &ctl, "link", "set", "eth0", "up"])?;

    for i in 1..=topo.hosts() {
        let h = topo.host(i);
        plug(&u, &format!("u-h{i}"), "br-u", &h, "eth0")?;
        netns::ip(&["-n", &h, "addr", "add", &underlay_cidr(host_ip(i)), "dev", "eth0"])?;
        netns::ip(&["-n", &h, "link", "set", "eth0", "up"])?;
        // eth1 is the provider NIC the agent enslaves to a network bridge; it
        // never holds an address, so keep it quiet on IPv6 too.
        plug(&u, &format!("p-h{i}"), "br-p", &h, "eth1")?;
        netns::ip(&["-n", &h, "link", "set", "eth1", "addrgenmode", "none"])?;
        netns::ip(&["-n", &h, "link", "set", "eth1", "up"])?;
    }

    let ext = topo.external();
    plug(&u, "p-ext", "br-p", &ext, "eth0")?;
    netns::ip(&["-n", &ext, "addr", "add", EXTERNAL_IPV4, "dev", "eth0"])?;
    // nodad: usable at once, no 1-2 s of tentative address.
    netns::ip(&["-n", &ext, "addr", "add", EXTERNAL_IPV6, "dev", "eth0", "nodad"])?;
    netns::ip(&["-n", &ext, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// A veth from switch port `port` on `bridge` (in the underlay namespace)
/// to `nic` in namespace `ns`, both ends created in place.
fn plug(underlay: &str, port: &str, bridge: &str, ns: &str, nic: &str) -> Result<()> {
    netns::ip(&["-n", underlay, "link", "add", port, "type", "veth", "peer", "name", nic, "netns", ns])?;
    netns::ip(&["-n", underlay, "link", "set", port, "addrgenmode", "none"])?;
    netns::ip(&["-n", underlay, "link", "set", port, "master", bridge, "up"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let t = Topology::new("nl-", 3).unwrap();
        assert_eq!(t.underlay(), "nl-u");
        assert_eq!(t.controller(), "nl-ctl");
        assert_eq!(t.external(), "nl-ext");
        assert_eq!(t.host(2), "nl-h2");
        assert_eq!(t.instance("vm1"), "nl-vm-vm1");
        assert_eq!(t.agent_netns_prefix(1), "nl-h1-");
        assert_eq!(t.router_namespace(2, "r1"), "nl-h2-qrouter-r1");
        assert_eq!(t.base_namespaces(), ["nl-u", "nl-ctl", "nl-ext", "nl-h1", "nl-h2", "nl-h3"]);
        assert_eq!(t.server_url(), "http://172.31.0.2:9696");
        assert_eq!(t.server_url_at(1), t.server_url());
        assert_eq!(t.server_url_at(3), "http://172.31.0.2:9698");
    }

    #[test]
    fn host_addresses() {
        assert_eq!(host_ip(1), Ipv4Addr::new(172, 31, 0, 11));
        assert_eq!(host_ip(MAX_HOSTS), Ipv4Addr::new(172, 31, 0, 210));
    }

    #[test]
    fn prefixes_and_host_counts_are_checked() {
        assert!(Topology::new("", 1).is_err());
        assert!(Topology::new("a b", 1).is_err());
        assert!(Topology::new("../x", 1).is_err());
        assert!(Topology::new("nl-", 0).is_err());
        assert!(Topology::new("nl-", MAX_HOSTS + 1).is_err());
        assert!(Topology::new("t1a-2-", 2).is_ok());
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse("controller"), Target::Controller);
        assert_eq!(Target::parse("ext"), Target::External);
        assert_eq!(Target::parse("h12"), Target::Host(12));
        assert_eq!(Target::parse("h0"), Target::Other("h0".into()));
        assert_eq!(Target::parse("h01"), Target::Other("h01".into()));
        assert_eq!(Target::parse("vm1"), Target::Other("vm1".into()));
        let t = Topology::new("p-", 2).unwrap();
        assert_eq!(t.fixed_namespace(&Target::Host(2)).unwrap(), Some("p-h2".into()));
        assert!(t.fixed_namespace(&Target::Host(3)).is_err());
        assert_eq!(t.fixed_namespace(&Target::Other("vm1".into())).unwrap(), None);
        assert_eq!(t.host_by_name("h2").unwrap(), 2);
        assert!(t.host_by_name("h3").is_err());
    }

    #[test]
    fn instance_names() {
        assert!(validate_instance_name("vm1").is_ok());
        assert!(validate_instance_name("web.a_b-1").is_ok());
        assert!(validate_instance_name("h1").is_err());
        assert!(validate_instance_name("controller").is_err());
        assert!(validate_instance_name("a/b").is_err());
        assert!(validate_instance_name("").is_err());
    }

    #[test]
    fn tap_names_fit_an_interface_name() {
        let tap = tap_name("3f2a6c1e-aaaa-bbbb-cccc-dddddddddddd");
        assert_eq!(tap, "tap3f2a6c1e-aa");
        assert!(tap.len() <= 15);
    }
}
