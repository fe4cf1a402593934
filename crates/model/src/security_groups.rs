//! Security groups and their rules (spec §2.7, §3.8): the records the store
//! returns, the validated requests, and the rule rules — protocol names and
//! numbers, port ranges and ICMP type/code, ethertype against the remote
//! prefix, the templates of new groups, and what makes two rules the same.

use std::fmt;

use ipnet::IpNet;

use crate::error::{Error, ResourceKind, Result};
use crate::ids::{ProjectId, SecurityGroupId, SecurityGroupRuleId};
use crate::resources::StandardAttrs;

/// The name of every project's own group, which no other group may take.
pub const DEFAULT_GROUP_NAME: &str = "default";
/// The description of a project's default group.
pub const DEFAULT_GROUP_DESCRIPTION: &str = "Default security group";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// Exact, lower-case names only (as Neutron's value validator).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            other => Err(Error::attr("direction", format!("'{other}' is not in ['ingress', 'egress']"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum EtherType {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl EtherType {
    pub fn as_str(self) -> &'static str {
        match self {
            EtherType::V4 => "IPv4",
            EtherType::V6 => "IPv6",
        }
    }

    /// Case-insensitive input, canonical output.
    pub fn parse(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("ipv4") {
            Ok(EtherType::V4)
        } else if s.eq_ignore_ascii_case("ipv6") {
            Ok(EtherType::V6)
        } else {
            Err(Error::attr("ethertype", format!("'{s}' is not in ['IPv4', 'IPv6']")))
        }
    }

    fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => EtherType::V4,
            IpNet::V6(_) => EtherType::V6,
        }
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Protocol names a rule accepts, with their IP protocol numbers.
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ip", 0),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
/// Protocols whose port range is a range of ports.
const PORT_PROTOCOLS: &[u8] = &[6, 17, 33, 132, 136];
/// Protocols that only exist over IPv6.
const IPV6_ONLY: &[u8] = &[41, 43, 44, 58, 59, 60];

/// The IP protocol number of a stored protocol value (a name or a number).
pub fn protocol_number(protocol: &str) -> Option<u8> {
    PROTOCOLS.iter().find(|(n, _)| *n == protocol).map(|(_, num)| *num).or_else(|| parse_protocol_number(protocol))
}

fn parse_protocol_number(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().and_then(|n| u8::try_from(n).ok())
}

/// Converts a requested protocol: `None` or "any" mean any protocol; names
/// are case-insensitive and kept in lower case; numbers 0–255 are kept as
/// given.
pub fn convert_protocol(raw: Option<&str>) -> Result<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.eq_ignore_ascii_case("any") {
        return Ok(None);
    }
    let lower = raw.to_ascii_lowercase();
    if PROTOCOLS.iter().any(|(n, _)| *n == lower) {
        return Ok(Some(lower));
    }
    if parse_protocol_number(raw).is_some() {
        return Ok(Some(raw.to_string()));
    }
    let mut names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    Err(Error::SecurityGroupRuleInvalidProtocol {
        protocol: raw.to_string(),
        allowed: format!("[None, {}]", names.join(", ")),
    })
}

/// Converts a port value given as text: an integer 0–65535.
pub fn convert_port(raw: Option<&str>) -> Result<Option<i64>> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.trim().parse::<i64>() {
        Ok(n) if (0..=65535).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(format!("Invalid value for port {raw}"))),
    }
}

/// Converts a remote prefix: a CIDR (host bits kept as given) or a bare
/// address, which becomes a /32 or /128.
pub fn convert_prefix(raw: Option<&str>) -> Result<Option<IpNet>> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || Error::attr("remote_ip_prefix", format!("'{raw}' is not a valid IP subnet"));
    let net = match raw.split_once('/') {
        Some((addr, len)) => {
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
            IpNet::new(addr, len.parse().map_err(|_| bad())?).map_err(|_| bad())?
        }
        None => IpNet::from(raw.parse::<std::net::IpAddr>().map_err(|_| bad())?),
    };
    Ok(Some(net))
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::SecurityGroupRuleInvalid(msg.into())
}

// ---- records -------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupRule {
    pub id: SecurityGroupRuleId,
    pub security_group_id: SecurityGroupId,
    pub project_id: ProjectId,
    pub direction: Direction,
    pub ethertype: EtherType,
    /// A protocol name (lower case) or number as given; `None` is any.
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    /// As given (host bits kept), a bare address as /32 or /128.
    pub remote_ip_prefix: Option<IpNet>,
    pub remote_group_id: Option<SecurityGroupId>,
    /// `None` for the rules of the templates.
    pub description: Option<String>,
    /// The rule's group is its project's default group.
    pub belongs_to_default_sg: bool,
    pub std: StandardAttrs,
}

impl SecurityGroupRule {
    /// The network form of the remote prefix (`10.0.0.5/24` → `10.0.0.0/24`).
    pub fn normalized_cidr(&self) -> Option<IpNet> {
        self.remote_ip_prefix.map(|n| n.trunc())
    }

    pub fn key(&self) -> RuleKey {
        RuleKey::new(
            self.security_group_id,
            self.direction,
            self.ethertype,
            self.protocol.as_deref(),
            (self.port_range_min, self.port_range_max),
            self.remote_group_id,
            self.remote_ip_prefix,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    pub id: SecurityGroupId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub stateful: bool,
    /// The project's `default` group.
    pub is_default: bool,
    /// In creation order.
    pub rules: Vec<SecurityGroupRule>,
    pub std: StandardAttrs,
}

// ---- requests ------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupCreate {
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub stateful: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityGroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub stateful: Option<bool>,
}

/// Refuses the reserved name (any case), on create and on update.
pub fn check_group_name(name: &str) -> Result<()> {
    if name.eq_ignore_ascii_case(DEFAULT_GROUP_NAME) {
        return Err(Error::SecurityGroupDefaultAlreadyExists);
    }
    Ok(())
}

/// A rule as the request gave it, every value still text (numbers in
/// their decimal form); `None` is absent or `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRequest {
    pub project_id: ProjectId,
    pub security_group_id: String,
    pub direction: String,
    /// `None`: the default, IPv4.
    pub ethertype: Option<String>,
    pub protocol: Option<String>,
    pub port_range_min: Option<String>,
    pub port_range_max: Option<String>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: String,
}

/// A validated, normalised rule, ready to be checked against the database
/// (groups exist, no duplicate) and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupRuleCreate {
    pub project_id: ProjectId,
    pub security_group_id: SecurityGroupId,
    pub direction: Direction,
    pub ethertype: EtherType,
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<IpNet>,
    pub remote_group_id: Option<SecurityGroupId>,
    pub description: Option<String>,
}

impl SecurityGroupRuleCreate {
    pub fn key(&self) -> RuleKey {
        RuleKey::new(
            self.security_group_id,
            self.direction,
            self.ethertype,
            self.protocol.as_deref(),
            (self.port_range_min, self.port_range_max),
            self.remote_group_id,
            self.remote_ip_prefix,
        )
    }

    fn template(
        group: SecurityGroupId,
        project: &ProjectId,
        direction: Direction,
        ethertype: EtherType,
        remote_group_id: Option<SecurityGroupId>,
    ) -> Self {
        SecurityGroupRuleCreate {
            project_id: project.clone(),
            security_group_id: group,
            direction,
            ethertype,
            protocol: None,
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id,
            description: None,
        }
    }
}

/// The rules of a project's default group: everything out, and in from
/// members of the same group, for both IP versions.
pub fn default_group_rules(group: SecurityGroupId, project: &ProjectId) -> Vec<SecurityGroupRuleCreate> {
    let mut rules = new_group_rules(group, project);
    for e in [EtherType::V4, EtherType::V6] {
        rules.push(SecurityGroupRuleCreate::template(group, project, Direction::Ingress, e, Some(group)));
    }
    rules
}

/// The rules every other new group starts with: everything out.
pub fn new_group_rules(group: SecurityGroupId, project: &ProjectId) -> Vec<SecurityGroupRuleCreate> {
    [EtherType::V4, EtherType::V6]
        .into_iter()
        .map(|e| SecurityGroupRuleCreate::template(group, project, Direction::Egress, e, None))
        .collect()
}

/// Validates and normalises a requested rule (spec §2.7). Every 400 is
/// decided here, before anything is looked up; ids that cannot name a
/// group are reported last, as the 404 a lookup would give.
pub fn validate_rule(req: RuleRequest) -> Result<SecurityGroupRuleCreate> {
    // Conversions, attribute by attribute.
    let direction = Direction::parse(&req.direction)?;
    let ethertype = match &req.ethertype {
        None => EtherType::V4,
        Some(e) => EtherType::parse(e)?,
    };
    let mut protocol = convert_protocol(req.protocol.as_deref())?;
    let mut min = convert_port(req.port_range_min.as_deref())?;
    let mut max = convert_port(req.port_range_max.as_deref())?;
    let prefix = convert_prefix(req.remote_ip_prefix.as_deref())?;

    // The port range, in the spec's order.
    if min == Some(1) && max == Some(65535) {
        min = None;
        max = None;
    }
    let number = protocol.as_deref().and_then(protocol_number);
    if min.is_some() || max.is_some() {
        let Some(p) = protocol.as_deref() else {
            return Err(invalid("Must also specify protocol if port range is given."));
        };
        let number = number.unwrap_or(u8::MAX);
        if PORT_PROTOCOLS.contains(&number) {
            if min == Some(0) || max == Some(0) {
                return Err(invalid("Invalid value for port 0"));
            }
            match (min, max) {
                (Some(a), Some(b)) if a <= b => {}
                _ => return Err(invalid("For TCP/UDP protocols, port_range_min must be <= port_range_max")),
            }
        } else if number == ICMP || number == ICMPV6 {
            if let Some(t) = min.filter(|t| *t > 255) {
                return Err(invalid(format!("Invalid value for ICMP type (port_range_min) {t}. It must be 0 to 255.")));
            }
            if let Some(c) = max.filter(|c| *c > 255) {
                return Err(invalid(format!("Invalid value for ICMP code (port_range_max) {c}. It must be 0 to 255.")));
            }
            if let (None, Some(c)) = (min, max) {
                return Err(invalid(format!(
                    "ICMP code (port-range-max) {c} is provided but ICMP type (port-range-min) is missing."
                )));
            }
        } else {
            return Err(invalid(format!("Ports cannot be specified for protocol {p}.")));
        }
    }

    // The protocol against the ethertype.
    if let Some(n) = number {
        match ethertype {
            EtherType::V4 if IPV6_ONLY.contains(&n) => {
                return Err(invalid(format!(
                    "Protocol {} is only supported with ethertype IPv6, not IPv4.",
                    protocol.as_deref().unwrap_or_default()
                )));
            }
            EtherType::V6 => match protocol.as_deref() {
                Some("icmp" | "icmpv6") => protocol = Some("ipv6-icmp".into()),
                Some(p) if parse_protocol_number(p) == Some(ICMP) => protocol = Some(ICMPV6.to_string()),
                _ => {}
            },
            EtherType::V4 => {}
        }
    }

    // The remote end.
    if prefix.is_some() && req.remote_group_id.is_some() {
        return Err(invalid("Only one of remote_ip_prefix and remote_group_id may be provided."));
    }
    if let Some(net) = &prefix
        && EtherType::of(net) != ethertype
    {
        return Err(invalid(format!("Conflicting value ethertype {ethertype} for CIDR {net}")));
    }

    let group_id = |raw: &str| -> Result<SecurityGroupId> {
        raw.parse().map_err(|_| Error::not_found(ResourceKind::SecurityGroup, raw))
    };
    Ok(SecurityGroupRuleCreate {
        project_id: req.project_id,
        security_group_id: group_id(&req.security_group_id)?,
        direction,
        ethertype,
        protocol,
        port_range_min: min,
        port_range_max: max,
        remote_ip_prefix: prefix,
        remote_group_id: req.remote_group_id.as_deref().map(group_id).transpose()?,
        description: Some(req.description),
    })
}

/// A bulk request adds rules to one group of one project.
pub fn check_bulk(rules: &[SecurityGroupRuleCreate]) -> Result<()> {
    let Some(first) = rules.first() else { return Ok(()) };
    if rules.iter().any(|r| r.security_group_id != first.security_group_id) {
        return Err(Error::BadRequest("Only one security group may be given rules at a time.".into()));
    }
    if rules.iter().any(|r| r.project_id != first.project_id) {
        return Err(Error::BadRequest("Only one project may be given rules at a time.".into()));
    }
    Ok(())
}

/// What makes two rules the same: direction, ethertype, protocol (by
/// number where it has one, so `tcp` ≡ `6`), port range, remote group and
/// remote prefix (by network, with `0.0.0.0/0`, `::/0` and none all
/// meaning "any"), within one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleKey {
    group: SecurityGroupId,
    direction: Direction,
    ethertype: EtherType,
    protocol: Option<String>,
    ports: (Option<i64>, Option<i64>),
    remote_group: Option<SecurityGroupId>,
    remote_prefix: Option<IpNet>,
}

impl RuleKey {
    fn new(
        group: SecurityGroupId,
        direction: Direction,
        ethertype: EtherType,
        protocol: Option<&str>,
        ports: (Option<i64>, Option<i64>),
        remote_group: Option<SecurityGroupId>,
        remote_prefix: Option<IpNet>,
    ) -> Self {
        let protocol = protocol.map(|p| protocol_number(p).map(|n| n.to_string()).unwrap_or_else(|| p.to_string()));
        let remote_prefix = remote_prefix.map(|n| n.trunc()).filter(|n| n.prefix_len() != 0);
        RuleKey { group, direction, ethertype, protocol, ports, remote_group, remote_prefix }
    }
}

/// The key as one line of text, unique per group, for a unique index.
impl fmt::Display for RuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "*".into());
        write!(
            f,
            "{} {} {} {} {} {} {}",
            self.direction.as_str(),
            self.ethertype,
            opt(self.protocol.clone()),
            opt(self.ports.0.map(|p| p.to_string())),
            opt(self.ports.1.map(|p| p.to_string())),
            opt(self.remote_group.map(|g| g.to_string())),
            opt(self.remote_prefix.map(|n| n.to_string())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;

    fn req(protocol: Option<&str>, min: Option<&str>, max: Option<&str>) -> RuleRequest {
        RuleRequest {
            project_id: ProjectId("p".into()),
            security_group_id: SecurityGroupId::new().to_string(),
            direction: "ingress".into(),
            ethertype: None,
            protocol: protocol.map(str::to_string),
            port_range_min: min.map(str::to_string),
            port_range_max: max.map(str::to_string),
            remote_ip_prefix: None,
            remote_group_id: None,
            description: String::new(),
        }
    }

    fn v6(mut r: RuleRequest) -> RuleRequest {
        r.ethertype = Some("ipv6".into());
        r
    }

    fn message(r: RuleRequest) -> String {
        validate_rule(r).expect_err("must fail").to_string()
    }

    #[test]
    fn protocols_by_name_number_or_any() {
        assert_eq!(convert_protocol(None).unwrap(), None);
        assert_eq!(convert_protocol(Some("ANY")).unwrap(), None);
        assert_eq!(convert_protocol(Some("TCP")).unwrap().as_deref(), Some("tcp"));
        assert_eq!(convert_protocol(Some("17")).unwrap().as_deref(), Some("17"));
        assert_eq!(convert_protocol(Some("0")).unwrap().as_deref(), Some("0"));
        assert_eq!(convert_protocol(Some("255")).unwrap().as_deref(), Some("255"));
        for bad in ["256", "-1", "bad_protocol_name", "", "1.5", " 6"] {
            let e = convert_protocol(Some(bad)).unwrap_err();
            assert_eq!(e.type_name(), "SecurityGroupRuleInvalidProtocol", "{bad}");
            assert_eq!(e.class(), ErrorClass::BadRequest);
        }
        assert_eq!(protocol_number("udp"), Some(17));
        assert_eq!(protocol_number("58"), Some(58));
        assert_eq!(protocol_number("bogus"), None);
    }

    #[test]
    fn defaults_and_canonical_forms() {
        let r = validate_rule(req(Some("Tcp"), Some("77"), Some("77"))).unwrap();
        assert_eq!(r.ethertype, EtherType::V4);
        assert_eq!(r.protocol.as_deref(), Some("tcp"));
        assert_eq!((r.port_range_min, r.port_range_max), (Some(77), Some(77)));
        assert_eq!(r.description.as_deref(), Some(""));
        let mut e = req(None, None, None);
        e.ethertype = Some("iPv6".into());
        assert_eq!(validate_rule(e).unwrap().ethertype, EtherType::V6);
        let mut e = req(None, None, None);
        e.ethertype = Some("bad_ethertype".into());
        assert_eq!(validate_rule(e).unwrap_err().class(), ErrorClass::BadRequest);
        let mut d = req(None, None, None);
        d.direction = "Ingress".into();
        assert_eq!(validate_rule(d).unwrap_err().class(), ErrorClass::BadRequest);
    }

    #[test]
    fn port_values_out_of_range_fail_first() {
        for (min, max, want) in [
            (Some("-16"), Some("80"), "Invalid value for port -16"),
            (Some("80"), Some("65536"), "Invalid value for port 65536"),
            (Some("-16"), Some("65536"), "Invalid value for port"),
            (Some("x"), None, "Invalid value for port x"),
        ] {
            assert!(message(req(Some("tcp"), min, max)).contains(want), "{min:?} {max:?}");
        }
        // Even for ICMP, a negative value is a bad port before anything else.
        assert!(message(req(Some("icmp"), Some("-1"), Some("25"))).contains("Invalid value"));
    }

    #[test]
    fn whole_range_becomes_any_port() {
        let r = validate_rule(req(Some("tcp"), Some("1"), Some("65535"))).unwrap();
        assert_eq!((r.port_range_min, r.port_range_max), (None, None));
        // Without a protocol it is not a port range at all any more.
        let r = validate_rule(req(None, Some("1"), Some("65535"))).unwrap();
        assert_eq!(r.protocol, None);
    }

    #[test]
    fn ports_need_a_protocol() {
        assert!(message(req(None, Some("80"), Some("80"))).contains("Must also specify protocol"));
    }

    #[test]
    fn tcp_like_ranges() {
        let order = "port_range_min must be <= port_range_max";
        for p in ["tcp", "udp", "dccp", "sctp", "udplite", "6", "17", "33", "132", "136"] {
            assert!(message(req(Some(p), Some("80"), Some("79"))).contains(order), "{p}");
            assert!(message(req(Some(p), None, Some("6"))).contains(order), "{p}");
            assert!(message(req(Some(p), Some("6"), None)).contains(order), "{p}");
            assert!(message(req(Some(p), Some("0"), Some("6"))).contains("Invalid value for port 0"), "{p}");
            assert!(validate_rule(req(Some(p), Some("80"), Some("80"))).is_ok(), "{p}");
        }
        assert!(message(req(Some("tcp"), None, Some("6"))).starts_with("For TCP/UDP protocols"));
    }

    #[test]
    fn icmp_type_and_code() {
        for p in ["icmp", "1"] {
            assert!(message(req(Some(p), Some("1"), Some("256"))).contains("Invalid value for ICMP code"));
            assert!(message(req(Some(p), Some("300"), Some("1"))).contains("Invalid value for ICMP type"));
            assert!(message(req(Some(p), None, Some("6"))).contains("ICMP type (port-range-min) is missing"));
            for (t, c) in [("3", Some("2")), ("3", Some("0")), ("8", Some("0")), ("0", Some("0")), ("11", None)] {
                let r = validate_rule(req(Some(p), Some(t), c)).unwrap();
                assert_eq!(r.port_range_min, Some(t.parse().unwrap()));
                assert_eq!(r.port_range_max, c.map(|c| c.parse().unwrap()));
            }
        }
        for p in ["ipv6-icmp", "icmpv6", "58"] {
            assert!(validate_rule(v6(req(Some(p), Some("128"), Some("0")))).is_ok());
            assert!(message(v6(req(Some(p), Some("1"), Some("256")))).contains("Invalid value for ICMP code"));
        }
    }

    #[test]
    fn other_protocols_take_no_ports() {
        assert!(message(req(Some("gre"), Some("1"), Some("2"))).contains("Ports cannot be specified for protocol gre"));
        assert!(message(req(Some("47"), Some("1"), None)).contains("Ports cannot be specified"));
    }

    #[test]
    fn ipv6_rewrites_and_ipv6_only_protocols() {
        let p = |r: RuleRequest| validate_rule(r).unwrap().protocol;
        assert_eq!(p(v6(req(Some("icmp"), None, None))).as_deref(), Some("ipv6-icmp"));
        assert_eq!(p(v6(req(Some("ICMPv6"), None, None))).as_deref(), Some("ipv6-icmp"));
        assert_eq!(p(v6(req(Some("1"), None, None))).as_deref(), Some("58"));
        assert_eq!(p(v6(req(Some("ipv6-icmp"), None, None))).as_deref(), Some("ipv6-icmp"));
        assert_eq!(p(v6(req(Some("tcp"), None, None))).as_deref(), Some("tcp"));
        assert_eq!(p(req(Some("icmp"), None, None)).as_deref(), Some("icmp"));
        for six in ["ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt", "ipv6-opts", "ipv6-route"] {
            assert_eq!(validate_rule(req(Some(six), None, None)).unwrap_err().class(), ErrorClass::BadRequest, "{six}");
            assert!(validate_rule(v6(req(Some(six), None, None))).is_ok(), "{six}");
        }
        for six in ["41", "43", "44", "58", "59", "60"] {
            assert_eq!(validate_rule(req(Some(six), None, None)).unwrap_err().class(), ErrorClass::BadRequest, "{six}");
        }
    }

    #[test]
    fn remote_prefix_forms_and_family() {
        let mut r = req(Some("tcp"), None, None);
        r.remote_ip_prefix = Some("10.0.0.5".into());
        assert_eq!(validate_rule(r.clone()).unwrap().remote_ip_prefix.unwrap().to_string(), "10.0.0.5/32");
        r.remote_ip_prefix = Some("10.0.0.5/24".into());
        let rule = validate_rule(r.clone()).unwrap();
        assert_eq!(rule.remote_ip_prefix.unwrap().to_string(), "10.0.0.5/24");
        for bad in ["192.168.1./24", "192.168.1.1/33", "bad_prefix", "256", "", "10.0.0.0/", "10.0.0.0/+8"] {
            r.remote_ip_prefix = Some(bad.into());
            assert_eq!(validate_rule(r.clone()).unwrap_err().class(), ErrorClass::BadRequest, "{bad}");
        }
        r.remote_ip_prefix = Some("2001:db8::1".into());
        assert!(message(r.clone()).contains("Conflicting value ethertype IPv4 for CIDR 2001:db8::1/128"));
        let mut r6 = v6(req(Some("tcp"), None, None));
        r6.remote_ip_prefix = Some("10.0.0.0/24".into());
        assert!(message(r6.clone()).contains("Conflicting value ethertype IPv6 for CIDR 10.0.0.0/24"));
        r6.remote_ip_prefix = Some("2001:db8::1".into());
        assert_eq!(validate_rule(r6).unwrap().remote_ip_prefix.unwrap().to_string(), "2001:db8::1/128");
    }

    #[test]
    fn one_remote_only_and_unparsable_groups_are_not_found() {
        let mut r = req(Some("tcp"), None, None);
        r.remote_ip_prefix = Some("10.0.0.0/24".into());
        r.remote_group_id = Some(SecurityGroupId::new().to_string());
        assert!(message(r.clone()).contains("Only one of"));
        r.remote_ip_prefix = None;
        r.remote_group_id = Some("bad_group_id".into());
        let e = validate_rule(r.clone()).unwrap_err();
        assert_eq!((e.class(), e.type_name().as_ref()), (ErrorClass::NotFound, "SecurityGroupNotFound"));
        r.remote_group_id = None;
        r.security_group_id = "nope".into();
        assert_eq!(validate_rule(r).unwrap_err().class(), ErrorClass::NotFound);
        // A 400 wins over a group that cannot exist.
        let mut r = req(Some("bad"), None, None);
        r.security_group_id = "nope".into();
        assert_eq!(validate_rule(r).unwrap_err().class(), ErrorClass::BadRequest);
    }

    #[test]
    fn duplicate_keys() {
        let group = SecurityGroupId::new();
        let rule = |protocol: Option<&str>, prefix: Option<&str>, e: Option<&str>| {
            let mut r = req(protocol, None, None);
            r.security_group_id = group.to_string();
            r.remote_ip_prefix = prefix.map(str::to_string);
            r.ethertype = e.map(str::to_string);
            validate_rule(r).unwrap().key()
        };
        assert_eq!(rule(Some("tcp"), None, None), rule(Some("6"), None, None));
        assert_eq!(rule(None, None, None), rule(Some("any"), Some("0.0.0.0/0"), None));
        assert_eq!(rule(Some("udp"), Some("::/0"), Some("IPv6")), rule(Some("17"), None, Some("IPv6")));
        assert_eq!(rule(Some("icmp"), None, Some("IPv6")), rule(Some("58"), None, Some("IPv6")));
        assert_eq!(rule(None, Some("10.0.0.5/24"), None), rule(None, Some("10.0.0.0/24"), None));
        assert_ne!(rule(Some("tcp"), None, None), rule(Some("udp"), None, None));
        assert_ne!(rule(None, None, None), rule(None, None, Some("IPv6")));
        assert_ne!(rule(None, Some("10.0.0.0/24"), None), rule(None, Some("10.0.0.0/25"), None));
        let full = |min: &str, max: &str| {
            let mut r = req(Some("tcp"), Some(min), Some(max));
            r.security_group_id = group.to_string();
            validate_rule(r).unwrap().key()
        };
        assert_eq!(full("1", "65535"), rule(Some("tcp"), None, None));
        assert_ne!(full("22", "22"), full("22", "23"));
        assert_eq!(rule(Some("tcp"), None, None).to_string(), "ingress IPv4 6 * * * *");
    }

    #[test]
    fn templates() {
        let g = SecurityGroupId::new();
        let p = ProjectId("p".into());
        let d = default_group_rules(g, &p);
        assert_eq!(d.len(), 4);
        assert_eq!(d.iter().filter(|r| r.direction == Direction::Egress).count(), 2);
        assert!(d.iter().filter(|r| r.direction == Direction::Ingress).all(|r| r.remote_group_id == Some(g)));
        assert!(d.iter().all(|r| r.protocol.is_none() && r.remote_ip_prefix.is_none() && r.description.is_none()));
        let n = new_group_rules(g, &p);
        assert_eq!(n.len(), 2);
        assert!(n.iter().all(|r| r.direction == Direction::Egress && r.remote_group_id.is_none()));
        let keys: std::collections::HashSet<_> = d.iter().map(|r| r.key()).collect();
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn reserved_name_and_bulk_shape() {
        assert_eq!(check_group_name("DeFault").unwrap_err().type_name(), "SecurityGroupDefaultAlreadyExists");
        assert!(check_group_name("default2").is_ok());
        let g = SecurityGroupId::new();
        let p = ProjectId("p".into());
        let mut rules = new_group_rules(g, &p);
        assert!(check_bulk(&rules).is_ok());
        rules[1].security_group_id = SecurityGroupId::new();
        assert_eq!(check_bulk(&rules).unwrap_err().class(), ErrorClass::BadRequest);
        let mut rules = new_group_rules(g, &p);
        rules[1].project_id = ProjectId("q".into());
        assert_eq!(check_bulk(&rules).unwrap_err().class(), ErrorClass::BadRequest);
    }
}
