//! Planning a port's fixed IPs: automatic and requested addresses, EUI-64
//! addresses on auto-address subnets, and writing the allocation rows.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::super::Conn;
use ipnet::IpNet;
use neutrino_model::ipam::{self, Choice, IpVersion};
use neutrino_model::resources::*;
use neutrino_model::{Error, MacAddress, NetworkId, PortId, ResourceKind, Result, SubnetId};

use super::super::internal;
use super::super::ipam::IpamTxn;
use super::super::subnets::{insert_allocation, subnet_exists};

/// Whether `addr` may be requested explicitly on `subnet` by a port of
/// `owner` (inside the CIDR; IPv4 network/broadcast excluded; the IPv6
/// subnet-router anycast address only for router ports and unowned ports).
fn valid_for_subnet(subnet: &Subnet, addr: IpAddr, owner: &str) -> bool {
    if !subnet.cidr.contains(&addr) {
        return false;
    }
    match subnet.cidr {
        IpNet::V4(n) if n.prefix_len() < 31 => addr != IpAddr::V4(n.network()) && addr != IpAddr::V4(n.broadcast()),
        IpNet::V6(n) if addr == IpAddr::V6(n.network()) => {
            owner.is_empty() || device_owner::is_router_port(owner) || owner == device_owner::ROUTER_GATEWAY
        }
        _ => true,
    }
}

fn eui64_on(subnet: &Subnet, mac: MacAddress) -> Option<IpAddr> {
    match subnet.cidr {
        IpNet::V6(prefix) => Some(IpAddr::V6(ipam::eui64_address(&prefix, mac))),
        IpNet::V4(_) => None,
    }
}

/// The inputs of address planning for one port.
pub(super) struct PlanInput<'a> {
    pub(super) network: &'a NetworkId,
    pub(super) subnets: &'a [Subnet],
    pub(super) mac: MacAddress,
    pub(super) owner: &'a str,
    /// `None`: automatic (create only).
    pub(super) requested: Option<&'a [FixedIpRequest]>,
    /// The port's current addresses (empty on create).
    pub(super) current: &'a [FixedIp],
}

/// Works out a port's complete list of fixed IPs, allocating in the IPAM
/// transaction what is new. Addresses already held are kept as they are.
pub(super) async fn plan_fixed_ips(
    conn: &mut Conn,
    ipam: &mut IpamTxn<'_>,
    input: PlanInput<'_>,
) -> Result<Vec<FixedIp>> {
    let owner = input.owner;
    let router_port = device_owner::is_router_port(owner);
    let router_if = device_owner::is_router_interface(owner);
    let choice = if device_owner::takes_lowest_address(owner) { Choice::Lowest } else { Choice::Random };
    let holds =
        |subnet: &SubnetId, addr: IpAddr| input.current.iter().any(|f| f.subnet_id == *subnet && f.ip_address == addr);
    let mut out: Vec<FixedIp> = Vec::new();

    let Some(requested) = input.requested else {
        // Automatic: service-typed subnets for this owner first, then plain.
        let typed: Vec<&Subnet> = input
            .subnets
            .iter()
            .filter(|s| !s.service_types.is_empty() && s.service_types.iter().any(|t| t == owner))
            .collect();
        let plain: Vec<&Subnet> = input.subnets.iter().filter(|s| s.service_types.is_empty()).collect();
        if !input.subnets.is_empty() && typed.is_empty() && plain.is_empty() {
            return Err(Error::NoValidServiceSubnet { network: input.network.to_string(), owner: owner.to_string() });
        }
        let ordered: Vec<&Subnet> = typed.into_iter().chain(plain).collect();
        for stateful in [
            ordered.iter().filter(|s| s.ip_version == IpVersion::V4).copied().collect::<Vec<_>>(),
            ordered.iter().filter(|s| s.ip_version == IpVersion::V6 && !s.is_auto_address()).copied().collect(),
        ] {
            if stateful.is_empty() {
                continue;
            }
            let mut got = None;
            for s in &stateful {
                if let Some(a) = ipam.choose(s, choice) {
                    got = Some((s.id, ipam::from_u128(a, s.ip_version)));
                    break;
                }
            }
            let (subnet_id, ip_address) =
                got.ok_or_else(|| Error::IpAddressGenerationFailure(input.network.to_string()))?;
            ipam.take(&subnet_id, ipam::to_u128(ip_address));
            out.push(FixedIp { subnet_id, ip_address });
        }
        if !router_port {
            for s in ordered.iter().filter(|s| s.is_auto_address()) {
                let Some(addr) = eui64_on(s, input.mac) else { continue };
                if ipam.is_taken(&s.id, ipam::to_u128(addr)) {
                    return Err(Error::IpAddressAlreadyAllocated { ip: addr.to_string(), subnet: s.id.to_string() });
                }
                ipam.take(&s.id, ipam::to_u128(addr));
                out.push(FixedIp { subnet_id: s.id, ip_address: addr });
            }
        }
        return Ok(out);
    };

    // Explicit list: resolve each entry's subnet first.
    let by_id: HashMap<SubnetId, &Subnet> = input.subnets.iter().map(|s| (s.id, s)).collect();
    let mut resolved: Vec<(&Subnet, Option<IpAddr>)> = Vec::with_capacity(requested.len());
    let mut seen_ips = HashSet::new();
    for entry in requested {
        let subnet = match (entry.subnet_id, entry.ip_address) {
            (None, None) => {
                return Err(Error::BadRequest("IP allocation requires subnet_id or ip_address".into()));
            }
            (Some(sid), _) => match by_id.get(&sid) {
                Some(s) => *s,
                None if subnet_exists(conn, &sid).await? => {
                    return Err(Error::InvalidInput(format!(
                        "Failed to create port on network {}, because fixed_ips included invalid subnet {sid}",
                        input.network
                    )));
                }
                None => return Err(Error::not_found(ResourceKind::Subnet, sid)),
            },
            (None, Some(ip)) => input
                .subnets
                .iter()
                .find(|s| s.cidr.contains(&ip))
                .ok_or_else(|| Error::InvalidIpForNetwork { ip: ip.to_string() })?,
        };
        if let Some(ip) = entry.ip_address {
            if !valid_for_subnet(subnet, ip, owner) {
                return Err(Error::InvalidIpForSubnet { ip: ip.to_string() });
            }
            if subnet.is_auto_address() && !router_if && Some(ip) != eui64_on(subnet, input.mac) {
                return Err(Error::AllocationOnAutoAddressSubnet { ip: ip.to_string(), subnet: subnet.id.to_string() });
            }
            if !seen_ips.insert(ip) {
                return Err(Error::attr("fixed_ips", format!("Duplicate IP address '{ip}'")));
            }
        }
        resolved.push((subnet, entry.ip_address));
    }

    // Explicit addresses are claimed before any automatic choice.
    let mut chosen: Vec<Option<IpAddr>> = vec![None; resolved.len()];
    for (i, (subnet, ip)) in resolved.iter().enumerate() {
        let Some(ip) = ip else { continue };
        if !holds(&subnet.id, *ip) {
            let key = ipam::to_u128(*ip);
            if ipam.is_taken(&subnet.id, key) {
                return Err(Error::IpAddressAlreadyAllocated { ip: ip.to_string(), subnet: subnet.id.to_string() });
            }
            ipam.take(&subnet.id, key);
        }
        chosen[i] = Some(*ip);
    }
    let mut kept_current: HashSet<IpAddr> = HashSet::new();
    for (i, (subnet, ip)) in resolved.iter().enumerate() {
        if ip.is_some() {
            continue;
        }
        // Keep the address the port already has on this subnet, if any.
        if let Some(existing) = input.current.iter().find(|f| {
            f.subnet_id == subnet.id && !kept_current.contains(&f.ip_address) && !chosen.contains(&Some(f.ip_address))
        }) {
            let want = if subnet.is_auto_address() && !router_if { eui64_on(subnet, input.mac) } else { None };
            if want.is_none() || want == Some(existing.ip_address) {
                kept_current.insert(existing.ip_address);
                chosen[i] = Some(existing.ip_address);
                continue;
            }
        }
        let addr = if subnet.is_auto_address() && !router_if {
            let a = eui64_on(subnet, input.mac).ok_or_else(|| Error::Internal("EUI-64 on IPv4".into()))?;
            if !holds(&subnet.id, a) && ipam.is_taken(&subnet.id, ipam::to_u128(a)) {
                return Err(Error::IpAddressAlreadyAllocated { ip: a.to_string(), subnet: subnet.id.to_string() });
            }
            a
        } else {
            let a = ipam
                .choose(subnet, choice)
                .ok_or_else(|| Error::IpAddressGenerationFailure(input.network.to_string()))?;
            ipam::from_u128(a, subnet.ip_version)
        };
        if !holds(&subnet.id, addr) {
            ipam.take(&subnet.id, ipam::to_u128(addr));
        }
        chosen[i] = Some(addr);
    }
    for ((subnet, _), ip) in resolved.iter().zip(chosen) {
        if let Some(ip) = ip {
            out.push(FixedIp { subnet_id: subnet.id, ip_address: ip });
        }
    }
    // Addresses on auto-address subnets stay even when the update omits them.
    for f in input.current {
        let auto = by_id.get(&f.subnet_id).is_some_and(|s| s.is_auto_address());
        if auto && !out.iter().any(|o| o.subnet_id == f.subnet_id) {
            let addr = by_id
                .get(&f.subnet_id)
                .and_then(|s| if router_if { None } else { eui64_on(s, input.mac) })
                .unwrap_or(f.ip_address);
            if addr != f.ip_address {
                if ipam.is_taken(&f.subnet_id, ipam::to_u128(addr)) {
                    return Err(Error::IpAddressAlreadyAllocated {
                        ip: addr.to_string(),
                        subnet: f.subnet_id.to_string(),
                    });
                }
                ipam.take(&f.subnet_id, ipam::to_u128(addr));
            }
            out.push(FixedIp { subnet_id: f.subnet_id, ip_address: addr });
        }
    }
    Ok(out)
}

/// Writes a port's addresses (replacing any it had) and keeps the IPAM
/// cache in step: every row removed or added moves its subnet's generation
/// (by trigger), and the transaction counts them.
pub(super) async fn write_allocations(
    conn: &mut Conn,
    ipam: &mut IpamTxn<'_>,
    port: &PortId,
    network: &NetworkId,
    old: &[FixedIp],
    new: &[FixedIp],
) -> Result<()> {
    let pid = port.to_string();
    if !old.is_empty() {
        sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1")
            .bind(&pid)
            .execute(&mut *conn)
            .await
            .map_err(internal)?;
    }
    for f in old {
        ipam.rows_changed(&f.subnet_id, 1);
        if !new.contains(f) {
            ipam.release(&f.subnet_id, ipam::to_u128(f.ip_address));
        }
    }
    for (i, f) in new.iter().enumerate() {
        insert_allocation(conn, &f.subnet_id, f.ip_address, &pid, &network.to_string(), i as i64 + 1).await?;
        ipam.rows_changed(&f.subnet_id, 1);
    }
    Ok(())
}
