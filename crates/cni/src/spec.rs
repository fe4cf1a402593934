//! The CNI specification as the plugin sees it: versions, the invocation
//! (environment and network configuration), errors with their well-known
//! codes, and the ADD result in the format of each version.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A CNI specification version the plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub const ALL: [Version; 4] = [Version::V0_3_1, Version::V0_4_0, Version::V1_0_0, Version::V1_1_0];
    /// What the plugin answers in, when the input names no version it knows.
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether `command` exists in this version: CHECK came with 0.4.0,
    /// STATUS and GC with 1.1.0.
    pub fn has(self, command: Command) -> bool {
        match command {
            Command::Add | Command::Del | Command::Version => true,
            Command::Check => self >= Version::V0_4_0,
            Command::Status | Command::Gc => self >= Version::V1_1_0,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The well-known error codes of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    NotAvailableLimitedConnectivity = 51,
    /// Plugin-specific (100+): the agent or the server refused the request
    /// (an unknown network or project, no address left ...).
    Refused = 100,
}

impl ErrorCode {
    pub fn from_number(n: u32) -> ErrorCode {
        match n {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::Io,
            6 => ErrorCode::Decode,
            7 => ErrorCode::InvalidConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::NotAvailable,
            51 => ErrorCode::NotAvailableLimitedConnectivity,
            _ => ErrorCode::Refused,
        }
    }
}

/// An error as the specification wants it on stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: details.into() }
    }

    /// The error object, in `version`.
    pub fn to_json(&self, version: Version) -> Value {
        json!({"cniVersion": version.as_str(), "code": self.code as u32, "msg": self.msg, "details": self.details})
    }
}

/// What the runtime passes in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`, as key-value pairs.
    pub args: BTreeMap<String, String>,
}

/// A container id or network name: an alphanumeric, then alphanumerics,
/// `_`, `.` or `-` (the specification's rule for both).
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An interface name Linux takes: 1 to 15 bytes, no `/`, no whitespace,
/// not `.` or `..`.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl Invocation {
    /// From the environment (`var` reads one variable); the variables each
    /// command requires are checked, and the error names those missing or
    /// invalid.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let invalid = |names: &str, why: &str| {
            CniError::new(ErrorCode::InvalidEnvironment, format!("invalid {names}"), why.to_string())
        };
        let raw = var("CNI_COMMAND").unwrap_or_default();
        let command = Command::parse(&raw)
            .ok_or_else(|| invalid("CNI_COMMAND", &format!("{raw:?} is not ADD, DEL, CHECK, STATUS, VERSION or GC")))?;
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let inv = Invocation {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS")
                .map(|a| {
                    a.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let (needs_netns, needs_attachment) = match command {
            Command::Add | Command::Check => (true, true),
            Command::Del => (false, true),
            Command::Status | Command::Version | Command::Gc => (false, false),
        };
        if needs_attachment {
            let mut missing = vec![];
            match &inv.container_id {
                Some(id) if valid_name(id) => {}
                _ => missing.push("CNI_CONTAINERID"),
            }
            if needs_netns && inv.netns.is_none() {
                missing.push("CNI_NETNS");
            }
            match &inv.ifname {
                Some(n) if valid_ifname(n) => {}
                _ => missing.push("CNI_IFNAME"),
            }
            if !missing.is_empty() {
                return Err(invalid(&missing.join(", "), "missing, empty or not of the form the specification allows"));
            }
        }
        Ok(inv)
    }

    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

/// A published port (`runtimeConfig.portMappings`, the `portMappings`
/// capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

fn tcp() -> String {
    "tcp".into()
}

/// One still-valid attachment of a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin, with the plugin's own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub version: Version,
    /// The CNI network's name (as the runtime knows it).
    pub name: String,
    /// The Neutrino network: its name or id.
    pub network: String,
    /// The project the container's ports belong to: its name or id.
    pub project: String,
    /// Security groups (names or ids); empty: the project's default group.
    pub security_groups: Vec<String>,
    /// The host agent's socket.
    pub agent_socket: String,
    /// Where published ports go: a floating IP address, or else one the
    /// agent allocates on `external_network`.
    pub floating_ip: Option<IpAddr>,
    pub external_network: Option<String>,
    pub port_mappings: Vec<PortMapping>,
    /// GC: the attachments the runtime still has.
    pub valid_attachments: Vec<ValidAttachment>,
    /// What a previous plugin of the list, or the ADD being checked,
    /// returned.
    pub prev_result: Option<Value>,
}

/// Where the agent listens unless the config says otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/neutrino/agent.sock";

impl NetConf {
    /// Parses stdin. The version is checked first (error 1 for one the
    /// plugin does not speak), then the keys (6 for bad JSON, 7 for a
    /// missing or invalid key).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(ErrorCode::Decode, "the network configuration is not JSON", e.to_string()))?;
        let Some(obj) = v.as_object() else {
            return Err(CniError::new(ErrorCode::Decode, "the network configuration is not a JSON object", ""));
        };
        let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_string);
        let raw_version = text("cniVersion").unwrap_or_default();
        let version = Version::parse(&raw_version).ok_or_else(|| {
            let known: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
            CniError::new(
                ErrorCode::IncompatibleVersion,
                "incompatible CNI version",
                format!("cniVersion {raw_version:?}; this plugin speaks {}", known.join(", ")),
            )
        })?;
        let bad = |key: &str, why: &str| CniError::new(ErrorCode::InvalidConfig, format!("invalid {key}"), why);
        let name = text("name").filter(|n| valid_name(n)).ok_or_else(|| bad("name", "missing or not a valid name"))?;
        let network = text("network")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("network", "the Neutrino network's name or id"))?;
        let project =
            text("project").filter(|n| !n.is_empty()).ok_or_else(|| bad("project", "the project's name or id"))?;
        let strings = |key: &str| -> Result<Vec<String>, CniError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad(key, "a list of strings")))
                    .collect(),
                Some(_) => Err(bad(key, "a list of strings")),
            }
        };
        let security_groups = strings("security_groups")?;
        let floating_ip = match text("floating_ip") {
            Some(a) => Some(a.parse().map_err(|_| bad("floating_ip", "an IP address"))?),
            None => None,
        };
        let runtime = obj.get("runtimeConfig");
        let port_mappings = match runtime.and_then(|r| r.get("portMappings")) {
            None | Some(Value::Null) => vec![],
            Some(m) => {
                serde_json::from_value(m.clone()).map_err(|e| bad("runtimeConfig.portMappings", &e.to_string()))?
            }
        };
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => vec![],
            Some(m) => {
                serde_json::from_value(m.clone()).map_err(|e| bad("cni.dev/valid-attachments", &e.to_string()))?
            }
        };
        Ok(NetConf {
            version,
            name,
            network,
            project,
            security_groups,
            agent_socket: text("agent_socket").unwrap_or_else(|| DEFAULT_AGENT_SOCKET.into()),
            floating_ip,
            external_network: text("external_network"),
            port_mappings,
            valid_attachments,
            prev_result: obj.get("prevResult").filter(|p| !p.is_null()).cloned(),
        })
    }

    /// The version stdin names, for answering an error even when the rest
    /// of it cannot be read.
    pub fn version_of(stdin: &[u8]) -> Option<Version> {
        let v: Value = serde_json::from_slice(stdin).ok()?;
        Version::parse(v.get("cniVersion")?.as_str()?)
    }
}

/// An address given to the container's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// With the subnet's prefix length, e.g. `10.0.0.5/24`.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub nameservers: Vec<IpAddr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
}

/// What an ADD made, independent of the version it is written in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResult {
    /// The host end of the veth pair.
    pub host_ifname: String,
    pub ifname: String,
    pub mac: String,
    pub mtu: u32,
    /// `CNI_NETNS`.
    pub sandbox: String,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl AddResult {
    /// The result object in `version`'s format: 0.3.1 and 0.4.0 give each
    /// address its IP version; 1.1.0 adds the interface's MTU.
    pub fn to_json(&self, version: Version) -> Value {
        let mut container = json!({"name": self.ifname, "mac": self.mac, "sandbox": self.sandbox});
        if version >= Version::V1_1_0 {
            container["mtu"] = json!(self.mtu);
        }
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!({"address": ip.address.to_string(), "interface": 1});
                if let Some(gw) = ip.gateway {
                    o["gateway"] = json!(gw.to_string());
                }
                if version < Version::V1_0_0 {
                    o["version"] = json!(if ip.address.addr().is_ipv4() { "4" } else { "6" });
                }
                o
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| match r.gw {
                Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
                None => json!({"dst": r.dst.to_string()}),
            })
            .collect();
        let mut dns = json!({"nameservers": self.dns.nameservers.iter().map(ToString::to_string).collect::<Vec<_>>()});
        if let Some(d) = &self.dns.domain {
            dns["domain"] = json!(d);
        }
        if !self.dns.search.is_empty() {
            dns["search"] = json!(self.dns.search);
        }
        json!({
            "cniVersion": version.as_str(),
            "interfaces": [{"name": self.host_ifname}, container],
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

/// The VERSION answer.
pub fn version_result(version: Version) -> Value {
    json!({
        "cniVersion": version.as_str(),
        "supportedVersions": Version::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn each_command_requires_its_variables() {
        let add = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=web;IgnoreUnknown=1"),
        ]))
        .unwrap();
        assert_eq!((add.command, add.container_id(), add.ifname()), (Command::Add, "c0ffee", "eth0"));
        assert_eq!(add.args["K8S_POD_NAME"], "web");
        let e = Invocation::from_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "-bad")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment);
        assert!(
            e.msg.contains("CNI_CONTAINERID") && e.msg.contains("CNI_NETNS") && e.msg.contains("CNI_IFNAME"),
            "{e}"
        );
        // DEL needs no netns (it may be gone already).
        let del =
            Invocation::from_env(env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")]));
        assert!(del.is_ok());
        assert!(Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert!(Invocation::from_env(env(&[("CNI_COMMAND", "GC")])).is_ok());
        let e = Invocation::from_env(env(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment);
        let long = Invocation::from_env(env(&[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "a-name-too-long-for-linux"),
        ]));
        assert_eq!(long.unwrap_err().code, ErrorCode::InvalidEnvironment);
    }

    #[test]
    fn the_config_names_network_project_and_groups_and_its_version_comes_first() {
        let conf = NetConf::parse(
            br#"{"cniVersion": "0.4.0", "name": "web", "type": "neutrino-cni", "network": "net1", "project": "demo",
                "security_groups": ["default", "web"], "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80}]},
                "prevResult": null}"#,
        )
        .unwrap();
        assert_eq!((conf.version, conf.network.as_str(), conf.project.as_str()), (Version::V0_4_0, "net1", "demo"));
        assert_eq!(conf.security_groups, ["default", "web"]);
        assert_eq!(conf.agent_socket, DEFAULT_AGENT_SOCKET);
        assert_eq!(conf.port_mappings[0].protocol, "tcp");
        let e = NetConf::parse(br#"{"cniVersion": "0.2.0", "name": "web"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::IncompatibleVersion);
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, ErrorCode::Decode);
        let e = NetConf::parse(br#"{"cniVersion": "1.0.0", "name": "web", "project": "demo"}"#).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (ErrorCode::InvalidConfig, "invalid network"));
        let e = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "web", "network": "n", "project": "p", "security_groups": "x"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert_eq!(NetConf::version_of(br#"{"cniVersion": "1.1.0"}"#), Some(Version::V1_1_0));
    }

    #[test]
    fn commands_exist_from_their_versions_on() {
        assert!(!Version::V0_3_1.has(Command::Check) && Version::V0_4_0.has(Command::Check));
        assert!(!Version::V1_0_0.has(Command::Gc) && Version::V1_1_0.has(Command::Status));
    }

    #[test]
    fn results_follow_the_requested_version() {
        let r = AddResult {
            host_ifname: "tap3f2a6c1e-aa".into(),
            ifname: "eth0".into(),
            mac: "fa:16:3e:00:00:01".into(),
            mtu: 1450,
            sandbox: "/run/netns/x".into(),
            ips: vec![
                IpConfig { address: "10.0.0.5/24".parse().unwrap(), gateway: Some("10.0.0.1".parse().unwrap()) },
                IpConfig { address: "fd00::5/64".parse().unwrap(), gateway: None },
            ],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: Some("10.0.0.1".parse().unwrap()) }],
            dns: Dns {
                nameservers: vec!["10.0.0.2".parse().unwrap()],
                domain: Some("openstacklocal".into()),
                search: vec![],
            },
        };
        let old = r.to_json(Version::V0_3_1);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert!(old["interfaces"][1].get("mtu").is_none());
        let v1 = r.to_json(Version::V1_0_0);
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][0]["interface"], 1);
        assert_eq!(v1["interfaces"][1]["sandbox"], "/run/netns/x");
        let v11 = r.to_json(Version::V1_1_0);
        assert_eq!((v11["cniVersion"].as_str(), v11["interfaces"][1]["mtu"].as_u64()), (Some("1.1.0"), Some(1450)));
        assert_eq!(v11["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.0.0.1"}));
        assert_eq!(v11["dns"]["nameservers"], json!(["10.0.0.2"]));
        assert_eq!(version_result(Version::V1_0_0)["supportedVersions"], json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    }
}
