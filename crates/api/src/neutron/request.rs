//! The request-body pipeline of spec §1.4, and typed conversion of the
//! attribute values that survive it.

use std::net::IpAddr;

use ipnet::IpNet;
use neutrino_model::policy::Context;
use neutrino_model::{Error, MacAddress, ProjectId, Result};
use serde_json::{Map, Value};

use super::spec::ResourceSpec;

pub type Item = Map<String, Value>;

/// Names are limited to 255 characters, like every Neutron string field.
pub const MAX_STRING: usize = 255;

fn parse_object(raw: &[u8]) -> Result<Item> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Error::BadRequest("Body contains invalid data".into())),
    }
}

/// Reconciles `project_id`/`tenant_id` (spec §1.13) and returns the owner.
fn reconcile_project(item: &mut Item, ctx: &Context) -> Result<ProjectId> {
    let get = |v: Option<&Value>| -> Result<Option<String>> {
        match v {
            None => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_STRING => Ok(Some(s.clone())),
            Some(other) => Err(Error::attr("project_id", format!("'{other}' is not a valid project id"))),
        }
    };
    let project = get(item.get("project_id"))?;
    let tenant = get(item.get("tenant_id"))?;
    let owner = match (project, tenant) {
        (Some(p), Some(t)) if p != t => {
            return Err(Error::BadRequest("'project_id' and 'tenant_id' do not match".into()));
        }
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => ctx.project_id.to_string(),
    };
    if owner != ctx.project_id.as_str() && !ctx.is_privileged() {
        return Err(Error::BadRequest(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges"
                .into(),
        ));
    }
    item.remove("tenant_id");
    item.insert("project_id".into(), Value::String(owner.clone()));
    Ok(ProjectId(owner))
}

fn check_keys(item: &Item, spec: &ResourceSpec, post: bool) -> Result<()> {
    let mut unknown: Vec<&str> = item.keys().map(String::as_str).filter(|k| spec.find(k).is_none()).collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(Error::BadRequest(format!("Unrecognized attribute(s) '{}'", unknown.join(", "))));
    }
    for key in item.keys() {
        let Some(a) = spec.find(key) else { continue };
        if post && !a.post {
            return Err(Error::BadRequest(format!("Attribute '{key}' not allowed in POST")));
        }
        if !post && !a.put {
            return Err(Error::BadRequest(format!("Cannot update read-only attribute {key}")));
        }
    }
    if post {
        let attrs = spec.attrs.iter();
        for a in attrs.filter(|a| a.required) {
            if !item.contains_key(a.name) {
                return Err(Error::BadRequest(format!(
                    "Failed to parse request. Required attribute '{}' not specified",
                    a.name
                )));
            }
        }
    }
    Ok(())
}

/// Parses a create body: one resource under the singular key, or a bulk
/// list under the plural key (each element bare or wrapped). Returns each
/// item with its owner reconciled into `project_id`.
pub fn parse_create(raw: &[u8], spec: &ResourceSpec, ctx: &Context) -> Result<(Vec<Item>, bool)> {
    let mut top = parse_object(raw)?;
    let (items, bulk) = if let Some(v) = top.remove(spec.singular) {
        match v {
            Value::Object(m) => (vec![m], false),
            _ => return Err(Error::BadRequest(format!("Unable to find '{}' in request body", spec.singular))),
        }
    } else if let Some(v) = top.remove(spec.plural) {
        let Value::Array(list) = v else {
            return Err(Error::BadRequest(format!("Unable to find '{}' in request body", spec.plural)));
        };
        if list.is_empty() {
            return Err(Error::BadRequest("Resources required".into()));
        }
        let mut items = Vec::with_capacity(list.len());
        for el in list {
            let el = match el {
                Value::Object(mut m) if m.len() == 1 && m.get(spec.singular).is_some_and(Value::is_object) => {
                    m.remove(spec.singular).unwrap_or_default()
                }
                other => other,
            };
            match el {
                Value::Object(m) => items.push(m),
                _ => return Err(Error::BadRequest("Body contains invalid data".into())),
            }
        }
        (items, true)
    } else {
        return Err(Error::BadRequest(format!("Unable to find '{}' in request body", spec.singular)));
    };
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        if spec.owned {
            // Unknown keys are reported before ownership problems.
            check_keys(&item, spec, true)?;
            reconcile_project(&mut item, ctx)?;
        } else {
            check_keys(&item, spec, true)?;
        }
        out.push(item);
    }
    Ok((out, bulk))
}

/// Parses an update body (singular key only).
pub fn parse_update(raw: &[u8], spec: &ResourceSpec) -> Result<Item> {
    let mut top = parse_object(raw)?;
    let Some(Value::Object(item)) = top.remove(spec.singular) else {
        return Err(Error::BadRequest(format!("Unable to find '{}' in request body", spec.singular)));
    };
    check_keys(&item, spec, false)?;
    Ok(item)
}

// ---- typed conversion --------------------------------------------------------

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// Neutron's strict boolean converter.
pub fn to_bool(name: &str, v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::String(s) => parse_bool_text(s).ok_or_else(|| {
            Error::BadRequest(format!("Invalid input for operation: '{s}' cannot be converted to boolean."))
        }),
        other => Err(Error::attr(name, format!("'{}' cannot be converted to boolean", show(other)))),
    }
}

/// The strings a strict boolean parser accepts.
pub fn parse_bool_text(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

pub fn to_int(name: &str, v: &Value) -> Result<i64> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| Error::attr(name, format!("'{n}' is not an integer"))),
        Value::String(s) => s.trim().parse().map_err(|_| Error::attr(name, format!("'{s}' is not an integer"))),
        other => Err(Error::attr(name, format!("'{}' is not an integer", show(other)))),
    }
}

pub fn to_string(name: &str, v: &Value, max: usize) -> Result<String> {
    match v {
        Value::String(s) if s.chars().count() > max => {
            Err(Error::attr(name, format!("'{s}' exceeds maximum length of {max}")))
        }
        Value::String(s) if s.chars().any(|c| c.is_control()) => {
            Err(Error::attr(name, format!("'{}' contains control characters", s.escape_debug())))
        }
        Value::String(s) => Ok(s.clone()),
        other => Err(Error::attr(name, format!("'{}' is not a valid string", show(other)))),
    }
}

/// A string attribute whose case does not matter (Neutron's
/// `convert_string_to_case_insensitive`): anything but a string is refused
/// as invalid input. The caller's validator lower-cases it.
pub fn to_case_insensitive(name: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(Error::InvalidInput(format!("{name} must be a string, not {}", show(other)))),
    }
}

/// A `dns_name` (`dns-integration`), checked against the server's
/// `dns_domain` and lower-cased.
pub fn to_dns_name(v: &Value, server_domain: &str) -> Result<String> {
    neutrino_model::dns::validate_dns_name(&to_case_insensitive("dns_name", v)?, server_domain)
}

/// A `dns_domain` of a network or port, checked and lower-cased.
pub fn to_dns_domain(v: &Value) -> Result<String> {
    neutrino_model::dns::validate_dns_domain("dns_domain", &to_case_insensitive("dns_domain", v)?)
}

pub fn to_ip(name: &str, v: &Value) -> Result<IpAddr> {
    let Value::String(s) = v else {
        return Err(Error::attr(name, format!("'{}' is not a valid IP address", show(v))));
    };
    parse_ip(s).ok_or_else(|| Error::attr(name, format!("'{s}' is not a valid IP address")))
}

/// Parses an address strictly: IPv4 in canonical dotted-quad form.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip: IpAddr = s.parse().ok()?;
    // Rust's parser already refuses leading zeros and short forms in IPv4.
    Some(ip)
}

/// Parses a CIDR; host bits are allowed and kept (callers truncate).
pub fn to_cidr(name: &str, v: &Value) -> Result<IpNet> {
    let Value::String(s) = v else {
        return Err(Error::attr(name, format!("'{}' is not a valid IP subnet", show(v))));
    };
    parse_cidr(s).ok_or_else(|| Error::attr(name, format!("'{s}' is not a valid IP subnet")))
}

/// Parses `address/prefix` strictly: the address in canonical form (no
/// leading zeros in IPv4 octets) and a plain decimal prefix length.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let (addr, len) = s.split_once('/')?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let addr: IpAddr = addr.parse().ok()?;
    IpNet::new(addr, len.parse().ok()?).ok()
}

pub fn to_mac(name: &str, v: &Value) -> Result<MacAddress> {
    let Value::String(s) = v else {
        return Err(Error::attr(name, format!("'{}' is not a valid MAC address", show(v))));
    };
    MacAddress::parse_port_mac(s).map_err(|_| Error::attr(name, format!("'{s}' is not a valid MAC address")))
}

pub fn to_uuid<T: std::str::FromStr>(name: &str, v: &Value) -> Result<T> {
    match v {
        Value::String(s) => s.parse().map_err(|_| Error::attr(name, format!("'{s}' is not a valid UUID"))),
        other => Err(Error::attr(name, format!("'{}' is not a valid UUID", show(other)))),
    }
}

/// A list attribute; `null` is an empty list (Neutron's `convert_none_to_empty_list`).
pub fn to_list<'a>(name: &str, v: &'a Value) -> Result<&'a [Value]> {
    match v {
        Value::Array(a) => Ok(a.as_slice()),
        Value::Null => Ok(&[]),
        other => Err(Error::attr(name, format!("'{}' is not a list", show(other)))),
    }
}

pub fn to_string_list(name: &str, v: &Value, max: usize) -> Result<Vec<String>> {
    to_list(name, v)?.iter().map(|e| to_string(name, e, max)).collect()
}

/// Reads optional attributes out of a body, removing them as it goes.
pub struct Fields(pub Item);

impl Fields {
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }
    pub fn string(&mut self, name: &str) -> Result<Option<String>> {
        self.take(name).map(|v| to_string(name, &v, MAX_STRING)).transpose()
    }
    pub fn bool(&mut self, name: &str) -> Result<Option<bool>> {
        self.take(name).map(|v| to_bool(name, &v)).transpose()
    }
    pub fn int(&mut self, name: &str) -> Result<Option<i64>> {
        self.take(name).map(|v| to_int(name, &v)).transpose()
    }
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}
