//! Instances: a namespace plugged into a Neutron port the way a hypervisor
//! plugs a VM (a veth, `tap<port11>` on the host, `eth0` with the port's
//! MAC inside), configured by a real DHCP client, busybox `udhcpc`.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::netns;
use crate::process;

/// The udhcpc event script, written into the run directory. Debian's
/// /etc/udhcpc/default.script does set the MTU when udhcpc is asked for
/// option 26, but it writes /etc/resolv.conf, which an instance namespace
/// shares with the machine, and it ignores classless static routes
/// (option 121). This one touches nothing but the instance's interface
/// and two files of the lab.
const DHCP_SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script of the Neutrino lab (written by `neutrino lab up`).
# Applies a lease to the instance's interface: address, MTU (option 26),
# classless static routes (option 121) or else the router (option 3).
# Records the lease in $LAB_LEASE_FILE and the name servers, as a
# resolv.conf, in $LAB_RESOLV_FILE; never touches the machine's files.

prefix_len() {
	bits=0
	for octet in $(echo "$1" | tr . ' '); do
		case $octet in
		255) bits=$((bits + 8)) ;;
		254) bits=$((bits + 7)) ;;
		252) bits=$((bits + 6)) ;;
		248) bits=$((bits + 5)) ;;
		240) bits=$((bits + 4)) ;;
		224) bits=$((bits + 3)) ;;
		192) bits=$((bits + 2)) ;;
		128) bits=$((bits + 1)) ;;
		esac
	done
	echo "$bits"
}

case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	if [ -n "${mtu:-}" ]; then
		ip link set "$interface" mtu "$mtu"
	fi
	# Flushing the addresses also drops the routes through them.
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-$(prefix_len "$subnet")}" dev "$interface"
	if [ -n "${staticroutes:-}" ]; then
		# RFC 3442: a client that gets classless routes ignores option 3.
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			if [ "$2" = 0.0.0.0 ]; then
				ip route replace "$1" dev "$interface"
			else
				ip route replace "$1" via "$2" dev "$interface"
			fi
			shift 2
		done
	elif [ -n "${router:-}" ]; then
		set -- $router
		ip route replace default via "$1" dev "$interface"
	fi
	for key in ip mask subnet router mtu dns domain lease serverid staticroutes; do
		eval "value=\${$key:-}"
		echo "$key=$value"
	done >"$LAB_LEASE_FILE.tmp" && mv "$LAB_LEASE_FILE.tmp" "$LAB_LEASE_FILE"
	{
		if [ -n "${domain:-}" ]; then
			echo "search $domain"
		fi
		for server in ${dns:-}; do
			echo "nameserver $server"
		done
	} >"$LAB_RESOLV_FILE.tmp" && mv "$LAB_RESOLV_FILE.tmp" "$LAB_RESOLV_FILE"
	;;
leasefail | nak)
	echo "udhcpc: $1 ${message:-}" >&2
	;;
esac
exit 0
"#;

const SCRIPT_FILE: &str = "udhcpc.sh";
const INSTANCE_DIR: &str = "instances";

/// An instance plugged into a port.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub name: String,
    pub namespace: String,
    /// `h1`, `h2`, ...
    pub host: String,
    pub port_id: String,
    pub mac: String,
    /// The host-side device, in the host's namespace.
    pub tap: String,
    /// What DHCP gave it, once it asked.
    pub lease: Option<Lease>,
}

/// A DHCPv4 lease as the instance applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// Address and prefix length (option 1).
    pub address: Ipv4Net,
    /// Option 3 (the first router).
    pub router: Option<Ipv4Addr>,
    /// Option 26.
    pub mtu: Option<u32>,
    /// Option 6.
    pub dns: Vec<IpAddr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 121: destination and gateway (0.0.0.0 = on link).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Option 51, seconds.
    pub lease_seconds: Option<u32>,
    /// Option 54.
    pub server: Option<Ipv4Addr>,
}

impl Lease {
    /// Parses the `key=value` file the script writes.
    pub fn parse(text: &str) -> Result<Lease> {
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        let bad = |what: &str| Error::Invalid(format!("bad lease file ({what}): {text:?}"));
        let ip: Ipv4Addr = get("ip").and_then(|v| v.parse().ok()).ok_or_else(|| bad("ip"))?;
        let prefix_len: u8 = match get("mask") {
            Some(mask) => mask.parse().map_err(|_| bad("mask"))?,
            None => {
                let subnet: Ipv4Addr = get("subnet").and_then(|v| v.parse().ok()).ok_or_else(|| bad("subnet"))?;
                u32::from(subnet).leading_ones() as u8
            }
        };
        let address = Ipv4Net::new(ip, prefix_len).map_err(|_| bad("mask"))?;
        fn first<T: std::str::FromStr>(value: Option<&str>) -> Option<T> {
            value?.split_whitespace().next()?.parse().ok()
        }
        let words = |key: &str| get(key).map(|v| v.split_whitespace().collect::<Vec<_>>()).unwrap_or_default();
        let route_words = words("staticroutes");
        let routes = route_words
            .chunks(2)
            .map(|pair| match pair {
                [dest, via] => Some((dest.parse().ok()?, via.parse().ok()?)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("staticroutes"))?;
        Ok(Lease {
            address,
            router: first(get("router")),
            mtu: first(get("mtu")),
            dns: words("dns").iter().filter_map(|d| d.parse().ok()).collect(),
            domain: get("domain").map(str::to_string),
            routes,
            lease_seconds: first(get("lease")),
            server: first(get("serverid")),
        })
    }
}

/// Writes the DHCP script and the instance directory of a run directory.
pub fn prepare(run_dir: &Path) -> Result<()> {
    let dir = run_dir.join(INSTANCE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io_at("cannot create", &dir, e))?;
    let script = run_dir.join(SCRIPT_FILE);
    std::fs::write(&script, DHCP_SCRIPT).map_err(|e| Error::io_at("cannot write", &script, e))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io_at("cannot chmod", &script, e))
}

pub fn lease_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(INSTANCE_DIR).join(format!("{name}.lease"))
}

pub fn resolv_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(INSTANCE_DIR).join(format!("{name}.resolv.conf"))
}

/// The lease `name` got last, if any.
pub fn read_lease(run_dir: &Path, name: &str) -> Option<Lease> {
    Lease::parse(&std::fs::read_to_string(lease_path(run_dir, name)).ok()?).ok()
}

/// Port ids go into device names and API paths.
pub fn validate_port_id(port_id: &str) -> Result<()> {
    if port_id.len() >= 11 && port_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(Error::Invalid(format!("bad port id {port_id:?}")))
    }
}

/// Creates namespace `ns` and plugs it into host namespace `host_ns` through
/// `tap` (host side) and `eth0` (instance side, with `mac`). Blocking.
pub fn plug(ns: &str, host_ns: &str, tap: &str, mac: &str) -> Result<()> {
    if netns::exists(ns) {
        return Err(Error::Invalid(format!("instance namespace {ns} already exists")));
    }
    if netns::ip(&["-n", host_ns, "link", "show", "dev", tap]).is_ok() {
        return Err(Error::Invalid(format!("the port is plugged already: {tap} exists in {host_ns}")));
    }
    netns::add(ns)?;
    let wired = (|| {
        netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        netns::ip(&["-n", host_ns, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        netns::ip(&["-n", ns, "link", "set", "eth0", "address", mac])?;
        netns::ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        // The host side is a bridge port: no IPv6 link-local, so no MLD or
        // router solicitations of its own into the tenant network.
        netns::ip(&["-n", host_ns, "link", "set", tap, "addrgenmode", "none"])?;
        netns::ip(&["-n", host_ns, "link", "set", tap, "up"])
    })();
    if wired.is_err() {
        let _ = unplug_namespace(ns);
    }
    wired
}

/// Stops what runs in instance namespace `ns` and removes it. The veth is
/// deleted first and explicitly: a namespace's devices go asynchronously,
/// and the same port plugged again right away would find its tap name taken.
pub fn unplug_namespace(ns: &str) -> Result<()> {
    process::terminate(&netns::pids(ns), Duration::from_secs(2));
    let _ = netns::ip(&["-n", ns, "link", "del", "eth0"]);
    netns::delete(ns)
}

/// Runs udhcpc in instance namespace `ns` until it holds a lease.
pub async fn dhcp(run_dir: &Path, ns: &str, name: &str, timeout: Duration) -> Result<Lease> {
    let script = run_dir.join(SCRIPT_FILE);
    if !script.exists() {
        prepare(run_dir)?;
    }
    let lease_file = lease_path(run_dir, name);
    let _ = std::fs::remove_file(&lease_file);
    // One DISCOVER every 2 s; -n: give up after the last, -q: exit once bound.
    let tries = (timeout.as_secs() / 2).max(1).to_string();
    let hostname = format!("hostname:{name}");
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns, "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", &tries, "-T", "2", "-A", "1"])
        .args(["-O", "mtu", "-O", "staticroutes", "-x", &hostname, "-s"])
        .arg(&script)
        .env("LAB_LEASE_FILE", &lease_file)
        .env("LAB_RESOLV_FILE", resolv_path(run_dir, name))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let fail = |detail: String| Error::Dhcp { name: name.to_string(), detail };
    let out = match tokio::time::timeout(timeout + Duration::from_secs(5), cmd.output()).await {
        Ok(out) => out.map_err(|e| fail(format!("cannot run udhcpc: {e}")))?,
        Err(_) => return Err(fail(format!("no lease within {}s", timeout.as_secs()))),
    };
    let output = || {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_string()
    };
    if !out.status.success() {
        return Err(fail(format!("udhcpc {}: {}", out.status, output())));
    }
    let text =
        std::fs::read_to_string(&lease_file).map_err(|_| fail(format!("udhcpc wrote no lease: {}", output())))?;
    Lease::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_lease() {
        let text = "ip=192.168.1.10\nmask=24\nsubnet=255.255.255.0\nrouter=192.168.1.1 192.168.1.254\nmtu=1450\n\
                    dns=192.168.1.2 2001:db8::53\ndomain=openstacklocal\nlease=86400\nserverid=192.168.1.2\n\
                    staticroutes=169.254.169.254/32 192.168.1.2 0.0.0.0/0 192.168.1.1\n";
        let lease = Lease::parse(text).unwrap();
        assert_eq!(lease.address, "192.168.1.10/24".parse().unwrap());
        assert_eq!(lease.router, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(lease.mtu, Some(1450));
        assert_eq!(lease.dns.len(), 2);
        assert_eq!(lease.domain.as_deref(), Some("openstacklocal"));
        assert_eq!(lease.lease_seconds, Some(86400));
        assert_eq!(lease.server, Some(Ipv4Addr::new(192, 168, 1, 2)));
        assert_eq!(
            lease.routes,
            vec![
                ("169.254.169.254/32".parse().unwrap(), Ipv4Addr::new(192, 168, 1, 2)),
                ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(192, 168, 1, 1)),
            ]
        );
    }

    #[test]
    fn a_minimal_lease_with_only_a_netmask() {
        let lease = Lease::parse("ip=10.0.0.5\nmask=\nsubnet=255.255.240.0\nrouter=\nmtu=\ndns=\n").unwrap();
        assert_eq!(lease.address, "10.0.0.5/20".parse().unwrap());
        assert_eq!((lease.router, lease.mtu, lease.routes.len(), lease.dns.len()), (None, None, 0, 0));
    }

    #[test]
    fn broken_leases_are_errors() {
        assert!(Lease::parse("").is_err());
        assert!(Lease::parse("ip=10.0.0.5\n").is_err());
        assert!(Lease::parse("ip=10.0.0.5\nmask=24\nstaticroutes=10.0.0.0/8\n").is_err());
    }

    #[test]
    fn port_ids() {
        assert!(validate_port_id("3f2a6c1e-aaaa-bbbb-cccc-dddddddddddd").is_ok());
        assert!(validate_port_id("../../x").is_err());
        assert!(validate_port_id("short").is_err());
    }
}
