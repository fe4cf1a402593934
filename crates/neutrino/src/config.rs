//! Server configuration: defaults that work on one machine, a TOML file,
//! environment variables and command-line flags, in rising precedence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use neutrino_model::MacAddress;
use neutrino_model::segments::{IdRange, MtuConfig, NetworkType, RangeError, SegmentConfig, VlanPhysnet};
use neutrino_model::subnets::SubnetLimits;
use serde::Deserialize;

/// Why the configuration cannot be used; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("project network type '{0}' is not supported (vxlan, vlan)")]
    NetworkType(String),
    #[error("database.sync must be 'normal' or 'full', not '{0}'")]
    DatabaseSync(String),
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("ports.base_mac '{0}' is not a MAC address")]
    BaseMac(String),
    #[error("unknown quota resource '{0}'")]
    Quota(String),
    /// `--auth keystone` without a setting it cannot do without (the flag).
    #[error("--auth keystone needs {0}")]
    KeystoneNeeds(&'static str),
    #[error("auth mode must be 'builtin' or 'keystone', not '{0}'")]
    AuthMode(String),
    #[error("dns_domain: {0}")]
    DnsDomain(String),
}

/// The TOML file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub region: Option<String>,
    pub bootstrap_password: Option<String>,
    pub log: Option<String>,
    /// The domain of ports' DNS names (Neutron's `dns_domain`); a trailing
    /// dot is added when missing, `""` means none.
    pub dns_domain: Option<String>,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub ml2: Ml2Section,
    #[serde(default)]
    pub ports: PortsSection,
    #[serde(default)]
    pub subnets: SubnetsSection,
    #[serde(default)]
    pub quotas: BTreeMap<String, i64>,
    #[serde(default)]
    pub agents: AgentsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    /// Seconds without a heartbeat before an agent is reported dead.
    pub down_time_seconds: Option<i64>,
    /// The credential agents present on the agent channel.
    pub token: Option<String>,
    /// Seconds between agent heartbeats.
    pub heartbeat_seconds: Option<u64>,
    /// DHCP lease time handed to instances.
    pub dhcp_lease_seconds: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `builtin` (default) or `keystone`.
    pub mode: Option<String>,
    pub token_ttl_seconds: Option<u64>,
    #[serde(default)]
    pub keystone: KeystoneSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneSection {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub project_name: Option<String>,
    pub user_domain_name: Option<String>,
    pub project_domain_name: Option<String>,
    pub cache_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `normal` (survives a crash of the process) or `full` (survives
    /// power loss; slower). SQLite only.
    pub sync: Option<String>,
    /// `postgres://...` for PostgreSQL (several servers may share it), or
    /// `sqlite://PATH` [default: the embedded SQLite in the data dir].
    pub url: Option<String>,
    /// Apply missing migrations on start [default: true]; with `false` the
    /// server refuses a schema that is not current (`neutrino db migrate`).
    pub auto_migrate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ml2Section {
    pub project_network_types: Option<Vec<String>>,
    pub vni_ranges: Option<Vec<String>>,
    pub flat_networks: Option<Vec<String>>,
    pub network_vlan_ranges: Option<Vec<String>>,
    pub global_physnet_mtu: Option<i64>,
    pub path_mtu: Option<i64>,
    pub overlay_ip_version: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsSection {
    pub base_mac: Option<String>,
    pub max_allowed_address_pairs: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetsSection {
    pub max_dns_nameservers: Option<usize>,
    pub max_host_routes: Option<usize>,
}

/// External Keystone settings, resolved.
#[derive(Debug, Clone)]
pub struct KeystoneConfig {
    pub url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    pub cache: Duration,
}

#[derive(Debug, Clone)]
pub enum AuthConfig {
    Builtin { token_ttl: Duration },
    Keystone(KeystoneConfig),
}

/// The resolved configuration of `neutrino server`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    pub region: String,
    pub bootstrap_password: Option<String>,
    pub auth: AuthConfig,
    /// The database: `None` is the embedded SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Apply missing migrations on start.
    pub auto_migrate: bool,
    pub sync_full: bool,
    pub segments: SegmentConfig,
    pub base_mac: MacAddress,
    pub max_allowed_address_pairs: usize,
    pub subnet_limits: SubnetLimits,
    pub quotas: BTreeMap<String, i64>,
    pub agent_down_time_secs: i64,
    /// `None`: generated on first start, kept in `DATA_DIR/agent-token`.
    pub agent_token: Option<String>,
    pub agent_heartbeat_secs: u64,
    pub dhcp_lease_seconds: u32,
    /// The domain ports' names are in (Neutron's `dns_domain`): lower
    /// case with its trailing dot, or empty for none. The API computes
    /// `dns_assignment` and checks FQDN `dns_name`s with it.
    pub dns_domain: String,
}

impl ServerConfig {
    /// The database URL, or the path of the embedded one.
    pub fn database_location(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self.data_dir.join("neutrino.db").to_string_lossy().into_owned(),
        }
    }

    /// Defaults for a single machine, with the data in `data_dir`.
    pub fn local(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: "127.0.0.1:9696".parse().expect("static address"),
            data_dir,
            public_url: None,
            region: "RegionOne".into(),
            bootstrap_password: None,
            auth: AuthConfig::Builtin { token_ttl: Duration::from_secs(3600) },
            database_url: None,
            auto_migrate: true,
            sync_full: false,
            segments: SegmentConfig::default(),
            base_mac: MacAddress::openstack_base(),
            max_allowed_address_pairs: 10,
            subnet_limits: SubnetLimits::default(),
            quotas: neutrino_model::quota::default_limits(),
            agent_down_time_secs: neutrino_model::agents::DEFAULT_DOWN_TIME_SECS,
            agent_token: None,
            agent_heartbeat_secs: 10,
            dhcp_lease_seconds: 86_400,
            dns_domain: neutrino_model::dns::DEFAULT_DNS_DOMAIN.into(),
        }
    }
}

/// Values given on the command line or in the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub bootstrap_password: Option<String>,
    pub auth: Option<String>,
    pub keystone_url: Option<String>,
    pub keystone_username: Option<String>,
    pub keystone_password: Option<String>,
    pub keystone_project: Option<String>,
    pub agent_token: Option<String>,
    pub database_url: Option<String>,
    /// `--no-auto-migrate`.
    pub no_auto_migrate: bool,
}

fn parse_types(list: &[String]) -> Result<Vec<NetworkType>, ConfigError> {
    list.iter()
        .map(|t| match t.as_str() {
            "vxlan" => Ok(NetworkType::Vxlan),
            "vlan" => Ok(NetworkType::Vlan),
            other => Err(ConfigError::NetworkType(other.to_string())),
        })
        .collect()
}

/// Merges defaults, the file and the overrides, and checks the result.
pub fn resolve(file: FileConfig, o: Overrides) -> Result<ServerConfig, ConfigError> {
    let mut c = ServerConfig::local(PathBuf::from("./neutrino-data"));
    if let Some(l) = file.listen {
        c.listen = l;
    }
    if let Some(d) = file.data_dir {
        c.data_dir = d;
    }
    c.public_url = file.public_url;
    if let Some(r) = file.region {
        c.region = r;
    }
    c.bootstrap_password = file.bootstrap_password;
    if let Some(d) = &file.dns_domain {
        c.dns_domain = neutrino_model::dns::server_dns_domain(d).map_err(ConfigError::DnsDomain)?;
    }
    c.database_url = file.database.url.clone();
    if let Some(m) = file.database.auto_migrate {
        c.auto_migrate = m;
    }
    if let Some(s) = &file.database.sync {
        c.sync_full = match s.as_str() {
            "normal" => false,
            "full" => true,
            other => return Err(ConfigError::DatabaseSync(other.to_string())),
        };
    }
    let ml2 = &file.ml2;
    if let Some(t) = &ml2.project_network_types {
        c.segments.project_network_types = parse_types(t)?;
    }
    if let Some(r) = &ml2.vni_ranges {
        c.segments.vni_ranges = r.iter().map(|r| IdRange::parse(r)).collect::<Result<_, _>>()?;
    }
    if let Some(f) = &ml2.flat_networks {
        c.segments.flat_networks = f.clone();
    }
    if let Some(v) = &ml2.network_vlan_ranges {
        let mut physnets: Vec<VlanPhysnet> = Vec::new();
        for entry in v {
            let p = VlanPhysnet::parse(entry)?;
            match physnets.iter_mut().find(|x| x.physnet == p.physnet) {
                Some(existing) => existing.ranges.extend(p.ranges),
                None => physnets.push(p),
            }
        }
        c.segments.vlan_physnets = physnets;
    }
    c.segments.mtu = MtuConfig {
        global_physnet_mtu: ml2.global_physnet_mtu.unwrap_or(1500),
        path_mtu: ml2.path_mtu.unwrap_or(0),
        overlay_ip_version: ml2.overlay_ip_version.unwrap_or(4),
    };
    c.segments.validate()?;
    if let Some(m) = &file.ports.base_mac {
        c.base_mac = m.parse().map_err(|_| ConfigError::BaseMac(m.clone()))?;
    }
    if let Some(n) = file.ports.max_allowed_address_pairs {
        c.max_allowed_address_pairs = n;
    }
    if let Some(n) = file.subnets.max_dns_nameservers {
        c.subnet_limits.max_dns_nameservers = n;
    }
    if let Some(n) = file.subnets.max_host_routes {
        c.subnet_limits.max_host_routes = n;
    }
    if let Some(d) = file.agents.down_time_seconds {
        c.agent_down_time_secs = d;
    }
    if let Some(t) = file.agents.token {
        c.agent_token = Some(t);
    }
    if let Some(h) = file.agents.heartbeat_seconds {
        c.agent_heartbeat_secs = h.max(1);
    }
    if let Some(l) = file.agents.dhcp_lease_seconds {
        c.dhcp_lease_seconds = l.max(60);
    }
    for (k, v) in file.quotas {
        if !neutrino_model::quota::QUOTA_RESOURCES.contains(&k.as_str()) {
            return Err(ConfigError::Quota(k));
        }
        c.quotas.insert(k, v);
    }

    // Overrides from flags and the environment.
    if let Some(l) = o.listen {
        c.listen = l;
    }
    if let Some(t) = o.agent_token {
        c.agent_token = Some(t);
    }
    if let Some(d) = o.data_dir {
        c.data_dir = d;
    }
    if o.database_url.is_some() {
        c.database_url = o.database_url;
    }
    if o.no_auto_migrate {
        c.auto_migrate = false;
    }
    if o.public_url.is_some() {
        c.public_url = o.public_url;
    }
    if o.bootstrap_password.is_some() {
        c.bootstrap_password = o.bootstrap_password;
    }
    let ttl = Duration::from_secs(file.auth.token_ttl_seconds.unwrap_or(3600));
    let mode = o.auth.or(file.auth.mode).unwrap_or_else(|| "builtin".into());
    let ks = file.auth.keystone;
    c.auth = match mode.as_str() {
        "builtin" => AuthConfig::Builtin { token_ttl: ttl },
        "keystone" => {
            let need = |v: Option<String>, flag: &'static str| v.ok_or(ConfigError::KeystoneNeeds(flag));
            AuthConfig::Keystone(KeystoneConfig {
                url: need(o.keystone_url.or(ks.url), "--keystone-url")?,
                username: need(o.keystone_username.or(ks.username), "--keystone-username")?,
                password: need(o.keystone_password.or(ks.password), "--keystone-password")?,
                project_name: o.keystone_project.or(ks.project_name).unwrap_or_else(|| "service".into()),
                user_domain_name: ks.user_domain_name.unwrap_or_else(|| "Default".into()),
                project_domain_name: ks.project_domain_name.unwrap_or_else(|| "Default".into()),
                cache: Duration::from_secs(ks.cache_seconds.unwrap_or(60)),
            })
        }
        other => return Err(ConfigError::AuthMode(other.to_string())),
    };
    Ok(c)
}

/// Reads a TOML configuration file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_apply_and_flags_win() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:19696"
            data_dir = "/tmp/nd"
            [ml2]
            vni_ranges = ["100:200"]
            network_vlan_ranges = ["physnet1:10:20", "physnet1:30:40", "provider"]
            [quotas]
            network = 5
            "#,
        )
        .unwrap();
        let c =
            resolve(file, Overrides { listen: Some("127.0.0.1:1".parse().unwrap()), ..Default::default() }).unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/nd"));
        assert_eq!(c.segments.vni_ranges, vec![IdRange { first: 100, last: 200 }]);
        assert_eq!(c.segments.vlan_physnets.len(), 2);
        assert_eq!(c.segments.vlan_physnets[0].ranges.len(), 2);
        assert_eq!(c.quotas["network"], 5);
        assert_eq!(c.quotas["port"], 500);
        assert_eq!(c.dns_domain, "openstacklocal.", "Neutron's default domain");
    }

    #[test]
    fn dns_domain_is_dotted_lower_case_and_checked() {
        let resolved = |text: &str| resolve(toml::from_str(text).unwrap(), Overrides::default());
        assert_eq!(resolved("dns_domain = \"Cloud.Example.ORG\"").unwrap().dns_domain, "cloud.example.org.");
        assert_eq!(resolved("dns_domain = \"cloud.example.org.\"").unwrap().dns_domain, "cloud.example.org.");
        assert_eq!(resolved("dns_domain = \"\"").unwrap().dns_domain, "");
        let refused = resolved("dns_domain = \"bad_domain\"").unwrap_err();
        assert!(matches!(refused, ConfigError::DnsDomain(_)), "{refused:?}");
        assert!(refused.to_string().starts_with("dns_domain: "), "{refused}");
    }

    #[test]
    fn bad_values_are_reported() {
        let bad: Result<FileConfig, _> = toml::from_str("nonsense = 1");
        assert!(bad.is_err());
        let file: FileConfig = toml::from_str("[ml2]\nvni_ranges = [\"0:20000000\"]").unwrap();
        assert!(matches!(resolve(file, Overrides::default()), Err(ConfigError::Range(_))));
        let file: FileConfig = toml::from_str("[quotas]\nnetworks = 3").unwrap();
        assert!(matches!(resolve(file, Overrides::default()), Err(ConfigError::Quota(q)) if q == "networks"));
        let keystone = Overrides { auth: Some("keystone".into()), ..Default::default() };
        let refused = resolve(FileConfig::default(), keystone).unwrap_err();
        assert_eq!(refused.to_string(), "--auth keystone needs --keystone-url");
        let missing = read_file(Path::new("/nonexistent/neutrino.toml")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read /nonexistent/neutrino.toml: "), "{missing}");
    }
}
