//! Internal DNS: the `dns_name` of ports, the `dns_domain` of networks and
//! ports, and the names a port answers to (`dns_assignment`), as Neutron's
//! `dns-integration` and `dns-domain-ports` extensions define them.
//!
//! Values are lower-cased before they are checked (DNS names are
//! case-insensitive and Neutron stores them in lower case). A name is a
//! PQDN (`vm1`, `vm1.rack2`) or, with a trailing dot, an FQDN
//! (`vm1.example.org.`); a domain is always an FQDN. The empty string means
//! "not set" for both.

use std::net::IpAddr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::resources::FixedIp;

/// Longest FQDN, in characters, not counting a trailing dot (Neutron's
/// `FQDN_FIELD_SIZE`).
pub const FQDN_MAX_LEN: usize = 255;
/// Longest label (the parts between dots).
pub const LABEL_MAX_LEN: usize = 63;
/// The server's `dns_domain` unless configured otherwise (Neutron's
/// default, `openstacklocal`, dotted).
pub const DEFAULT_DNS_DOMAIN: &str = "openstacklocal.";

/// One name of a port: what `dns_assignment` lists for each fixed IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsAssignment {
    pub hostname: String,
    pub ip_address: IpAddr,
    pub fqdn: String,
}

/// Neutron's conversion of DNS attributes: lower case.
pub fn lowercase(value: &str) -> String {
    value.to_lowercase()
}

/// `domain` with exactly one trailing dot, or empty when it is empty.
fn dotted(domain: &str) -> String {
    let bare = domain.strip_suffix('.').unwrap_or(domain);
    if bare.is_empty() { String::new() } else { format!("{bare}.") }
}

/// Why `name` (lower case) is neither a valid PQDN nor a valid FQDN, if it
/// is not. The empty name is valid.
fn format_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    // One trailing dot makes the name fully qualified.
    let bare = name.strip_suffix('.').unwrap_or(name);
    let reason = (|| {
        let length = bare.chars().count();
        if length > FQDN_MAX_LEN {
            return Some(format!("it is {length} characters long, more than the {FQDN_MAX_LEN} of a FQDN"));
        }
        let labels: Vec<&str> = bare.split('.').collect();
        for label in &labels {
            if label.is_empty() {
                return Some("it has an empty label".to_string());
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Some(format!("label '{label}' begins or ends with a hyphen"));
            }
            let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
            if label.chars().count() > LABEL_MAX_LEN || !label.chars().all(allowed) {
                return Some(format!(
                    "label '{label}' must have 1 to {LABEL_MAX_LEN} characters, each a letter, a digit or a hyphen"
                ));
            }
        }
        // The last label of a multi-label name is a top-level domain, and
        // no top-level domain is all digits (RFC 1123, 2.1).
        match labels.as_slice() {
            [_, .., last] if last.chars().all(|c| c.is_ascii_digit()) => {
                Some(format!("top-level label '{last}' is all digits"))
            }
            _ => None,
        }
    })()?;
    Some(format!("'{name}' is not a valid PQDN or FQDN: {reason}"))
}

/// Checks a port's requested `dns_name` and returns it as stored (lower
/// case). `dns_domain` is the server's domain: an FQDN must lie in it, with
/// at least one label of its own, and a PQDN must leave room for it.
///
/// Neutron makes these domain checks only when its `dns_domain` is not the
/// default; Neutrino always makes them, since it always uses the name (see
/// [`dns_assignment`]).
pub fn validate_dns_name(value: &str, dns_domain: &str) -> Result<String> {
    let name = lowercase(value);
    if let Some(problem) = format_problem(&name) {
        return Err(Error::attr("dns_name", problem));
    }
    if name.is_empty() {
        return Ok(name);
    }
    let domain = dotted(dns_domain);
    // What follows the name in its FQDN: `.domain.`, or nothing.
    let suffix = if domain.is_empty() { String::new() } else { format!(".{domain}") };
    let (length, suffix_length) = (name.chars().count(), suffix.chars().count());
    if name.ends_with('.') {
        if !suffix.is_empty() && (length <= suffix_length || !name.ends_with(&suffix)) {
            return Err(Error::attr(
                "dns_name",
                format!(
                    "'{name}' is a FQDN, so it must end with the server's dns_domain '{domain}' \
                     and have at least one label before it"
                ),
            ));
        }
    } else if length + suffix_length > FQDN_MAX_LEN {
        return Err(Error::attr(
            "dns_name",
            format!(
                "'{name}' has {length} characters: followed by the server's dns_domain '{domain}' it would \
                 make a FQDN longer than {FQDN_MAX_LEN}"
            ),
        ));
    }
    Ok(name)
}

/// Checks a requested `dns_domain` (of a network or a port) and returns it
/// as stored (lower case). A domain must be an FQDN (end with a dot) short
/// enough for a host name to go in front of it.
pub fn validate_dns_domain(attribute: &str, value: &str) -> Result<String> {
    let domain = lowercase(value);
    if domain.is_empty() {
        return Ok(domain);
    }
    if !domain.ends_with('.') {
        return Err(Error::attr(attribute, format!("'{domain}' is not a FQDN: it must end with '.'")));
    }
    if let Some(problem) = format_problem(&domain) {
        return Err(Error::attr(attribute, problem));
    }
    let length = domain.chars().count();
    if length > FQDN_MAX_LEN - 2 {
        return Err(Error::attr(
            attribute,
            format!("'{domain}' has {length} characters, which leaves no room for a host name in a FQDN"),
        ));
    }
    Ok(domain)
}

/// The server's `dns_domain` setting as used: lower case, with its trailing
/// dot (added when missing, as Neutron does), or empty for none. The error
/// says what is wrong with it.
pub fn server_dns_domain(setting: &str) -> std::result::Result<String, String> {
    let domain = dotted(&lowercase(setting.trim()));
    match validate_dns_domain("dns_domain", &domain) {
        Ok(d) => Ok(d),
        Err(Error::InvalidAttribute { reason, .. }) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

/// The host name Neutron gives an address of a port without a `dns_name`:
/// `host-` and the address with its dots and colons turned into hyphens
/// (`host-10-0-0-5`, `host-fd00--5`).
pub fn default_hostname(ip: IpAddr) -> String {
    format!("host-{}", ip.to_string().replace(['.', ':'], "-"))
}

/// The names of a port, one per fixed IP, as `dns_assignment` reports
/// them: the host name is the port's `dns_name` when it has one and
/// [`default_hostname`] otherwise; the FQDN is the host name in the
/// server's `dns_domain` (`dns_domain` empty: the host name alone), or the
/// `dns_name` itself when that is already an FQDN.
///
/// Deliberate departure from Neutron: Neutron ignores `dns_name` here (and
/// reports `host-...` names) for as long as its `dns_domain` is the default
/// `openstacklocal`. Neutrino honours `dns_name` whatever the domain, so
/// that instances and containers resolve each other by the names they were
/// given without any configuration.
pub fn dns_assignment(dns_name: &str, fixed_ips: &[FixedIp], dns_domain: &str) -> Vec<DnsAssignment> {
    let domain = dotted(dns_domain);
    let in_domain = |host: &str| if domain.is_empty() { host.to_string() } else { format!("{host}.{domain}") };
    // A port's own name is the same for every address.
    let named = (!dns_name.is_empty()).then(|| {
        let fqdn = if dns_name.ends_with('.') { dns_name.to_string() } else { in_domain(dns_name) };
        (dns_name.to_string(), fqdn)
    });
    fixed_ips
        .iter()
        .map(|f| {
            let (hostname, fqdn) = match &named {
                Some((hostname, fqdn)) => (hostname.clone(), fqdn.clone()),
                None => {
                    let hostname = default_hostname(f.ip_address);
                    let fqdn = in_domain(&hostname);
                    (hostname, fqdn)
                }
            };
            DnsAssignment { hostname, ip_address: f.ip_address, fqdn }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubnetId;

    fn reason(r: Result<String>) -> String {
        match r {
            Err(Error::InvalidAttribute { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn fixed(ips: &[&str]) -> Vec<FixedIp> {
        ips.iter().map(|ip| FixedIp { subnet_id: SubnetId::new(), ip_address: ip.parse().unwrap() }).collect()
    }

    #[test]
    fn names_are_lower_cased_and_checked_label_by_label() {
        let d = DEFAULT_DNS_DOMAIN;
        assert_eq!(validate_dns_name("", d).unwrap(), "");
        assert_eq!(validate_dns_name("Web-1", d).unwrap(), "web-1");
        assert_eq!(validate_dns_name("a.b.c", d).unwrap(), "a.b.c");
        assert_eq!(validate_dns_name("123", d).unwrap(), "123", "one all-digit label is not a TLD");
        assert_eq!(validate_dns_name(&"a".repeat(63), d).unwrap(), "a".repeat(63));
        assert!(reason(validate_dns_name(&"a".repeat(64), d)).contains("1 to 63"));
        assert!(reason(validate_dns_name("-web", d)).contains("hyphen"));
        assert!(reason(validate_dns_name("web-", d)).contains("hyphen"));
        assert!(reason(validate_dns_name("web_1", d)).contains("'web_1'"));
        assert!(reason(validate_dns_name("wéb", d)).contains("letter, a digit or a hyphen"));
        assert!(reason(validate_dns_name("a..b", d)).contains("empty label"));
        assert!(reason(validate_dns_name("host.123", d)).contains("all digits"));
        assert!(reason(validate_dns_name("host.123.", d)).contains("all digits"));
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        assert!(reason(validate_dns_name(&long, d)).contains("255"));
        let e = validate_dns_name("-x", d).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid input for dns_name. Reason: '-x' is not a valid PQDN or FQDN: label '-x' begins or ends with a hyphen."
        );
    }

    #[test]
    fn fqdn_names_must_lie_in_the_servers_domain() {
        let d = "example.org.";
        assert_eq!(validate_dns_name("VM1.Example.ORG.", d).unwrap(), "vm1.example.org.");
        assert_eq!(validate_dns_name("a.b.example.org.", d).unwrap(), "a.b.example.org.");
        assert!(reason(validate_dns_name("vm1.example.com.", d)).contains("'example.org.'"));
        assert!(reason(validate_dns_name("example.org.", d)).contains("at least one label"));
        assert!(reason(validate_dns_name("vm1xexample.org.", d)).contains("must end with"));
        // The domain given without its dot is the same domain.
        assert_eq!(validate_dns_name("vm1.example.org.", "example.org").unwrap(), "vm1.example.org.");
        // Without a server domain any FQDN goes.
        assert_eq!(validate_dns_name("vm1.example.com.", "").unwrap(), "vm1.example.com.");
        // A PQDN must leave room for the domain.
        let big_domain = format!("{}.{}.{}.", "d".repeat(63), "e".repeat(63), "f".repeat(63));
        let name = format!("{}.{}", "a".repeat(40), "b".repeat(30));
        assert!(reason(validate_dns_name(&name, &big_domain)).contains("longer than 255"));
    }

    #[test]
    fn domains_are_fqdns_with_room_for_a_host() {
        assert_eq!(validate_dns_domain("dns_domain", "").unwrap(), "");
        assert_eq!(validate_dns_domain("dns_domain", "Example.ORG.").unwrap(), "example.org.");
        assert!(reason(validate_dns_domain("dns_domain", "example.org")).contains("not a FQDN"));
        assert!(reason(validate_dns_domain("dns_domain", ".")).contains("empty label"));
        assert!(reason(validate_dns_domain("dns_domain", "bad_domain.org.")).contains("bad_domain"));
        assert!(reason(validate_dns_domain("dns_domain", "example.42.")).contains("all digits"));
        let long = format!("{}.{}.{}.{}.", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        assert_eq!(long.len(), 254);
        assert!(reason(validate_dns_domain("dns_domain", &long)).contains("no room"));
        let e = validate_dns_domain("dns_domain", "x").unwrap_err();
        assert!(matches!(e, Error::InvalidAttribute { ref attribute, .. } if attribute == "dns_domain"));
    }

    #[test]
    fn the_server_domain_gets_its_dot() {
        assert_eq!(server_dns_domain("openstacklocal").unwrap(), "openstacklocal.");
        assert_eq!(server_dns_domain("OpenStackLocal.").unwrap(), "openstacklocal.");
        assert_eq!(server_dns_domain("").unwrap(), "");
        assert!(server_dns_domain("bad domain").is_err());
    }

    #[test]
    fn assignments_name_every_address() {
        let ips = fixed(&["10.0.0.5", "fd00::5"]);
        let got = dns_assignment("", &ips, DEFAULT_DNS_DOMAIN);
        assert_eq!(
            got,
            [
                DnsAssignment {
                    hostname: "host-10-0-0-5".into(),
                    ip_address: ips[0].ip_address,
                    fqdn: "host-10-0-0-5.openstacklocal.".into(),
                },
                DnsAssignment {
                    hostname: "host-fd00--5".into(),
                    ip_address: ips[1].ip_address,
                    fqdn: "host-fd00--5.openstacklocal.".into(),
                },
            ]
        );
        // The port's own name, in the default domain too (unlike Neutron).
        let named = dns_assignment("web", &ips, DEFAULT_DNS_DOMAIN);
        assert!(named.iter().all(|a| a.hostname == "web" && a.fqdn == "web.openstacklocal."));
        let fqdn = dns_assignment("web.example.org.", &ips[..1], "example.org.");
        assert_eq!((fqdn[0].hostname.as_str(), fqdn[0].fqdn.as_str()), ("web.example.org.", "web.example.org."));
        // No server domain: the host name is the whole name.
        assert_eq!(dns_assignment("", &ips[..1], "")[0].fqdn, "host-10-0-0-5");
        assert!(dns_assignment("web", &[], DEFAULT_DNS_DOMAIN).is_empty());
        let json = serde_json::to_value(&named[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hostname": "web", "ip_address": "10.0.0.5", "fqdn": "web.openstacklocal."})
        );
    }
}
