use std::net::IpAddr;

use neutrino_model::resources::device_owner;
use neutrino_proto::{FixedIp, PortView, RemotePort};
use uuid::Uuid;

use super::*;
use crate::desired::tests::{
    NET, NET_B, S4, S6, dhcp_service, flat_net, port, remote, settings, view, vlan_net, vxlan_net,
};
use crate::kernel::fake::FakeKernel;
use crate::kernel::{
    DOOMED_GROUP, FdbEntry, LinkChange, LinkKind, Mac, NeighEntry, NsLinkChange, OWNED_GROUP, Op, PortFlags,
};

const BR: &str = "brq6f1d2a3b-11";
const BR_B: &str = "brq7e2c3b4a-22";
const P1: PortId = PortId(Uuid::from_u128(0x11111111_aaaa_4000_8000_000000000001));
const P2: PortId = PortId(Uuid::from_u128(0x22222222_aaaa_4000_8000_000000000002));
const P3: PortId = PortId(Uuid::from_u128(0x33333333_aaaa_4000_8000_000000000003));
const P4: PortId = PortId(Uuid::from_u128(0x44444444_aaaa_4000_8000_000000000004));
const DHCP: PortId = PortId(Uuid::from_u128(0x9d8c7b6a_aaaa_4000_8000_000000000003));
/// The remote ports of the l2population tests.
const R1: PortId = PortId(Uuid::from_u128(0x0e0e0e0e_0000_4000_8000_000000000001));
const R2: PortId = PortId(Uuid::from_u128(0x0e0e0e0e_0000_4000_8000_000000000002));

fn mac(m: &str) -> Mac {
    m.parse().unwrap()
}

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// A fake host with its underlay NIC.
fn fake() -> FakeKernel {
    let mut k = FakeKernel::new();
    k.add_foreign("eth0", "");
    k
}

fn reconciler() -> Reconciler<FakeKernel> {
    Reconciler::new(fake(), settings())
}

fn compute(network: NetworkId, m: &str) -> PortView {
    port(network, m, "compute:nova")
}

/// A view of NET with one remote port behind one remote VTEP, and `ports`.
fn view_with_remote(ports: Vec<(PortId, PortView)>) -> HostView {
    let mut v = view(vec![(NET, vxlan_net(100))], ports);
    v.remote_ports.insert(R1, remote(NET, "172.31.0.12", "fa:16:3e:00:01:12", &["10.0.0.12", "fd00::12"]));
    v
}

async fn run(r: &mut Reconciler<FakeKernel>, v: &HostView) -> Outcome {
    let outcome = r.reconcile(v).await;
    assert!(outcome.observed);
    outcome
}

async fn clean(r: &mut Reconciler<FakeKernel>, v: &HostView) -> Outcome {
    let outcome = run(r, v).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    // The agent's links and the taps it brought up never get an IPv6
    // link-local address (physical interfaces are the operator's).
    let k = r.kernel();
    let ours: Vec<&String> = k.link_locals.iter().filter(|n| n.starts_with("tap") || k.links[*n].owned()).collect();
    assert!(ours.is_empty(), "IPv6 link-local on {ours:?}");
    outcome
}

#[tokio::test]
async fn a_new_network_and_port_take_the_fewest_ops_and_a_second_run_none() {
    let mut r = reconciler();
    r.kernel_mut().add_foreign("tap11111111-aa", "tun");
    let v = view_with_remote(vec![(P1, compute(NET, "fa:16:3e:00:00:01"))]);
    let first = clean(&mut r, &v).await;
    assert_eq!(first.wired, BTreeSet::from([P1]));
    // Bridge: create (up, no carrier yet) + addrgenmode. VXLAN: create +
    // (addrgenmode, port flags) + up. l2pop: flood, unicast, static, three
    // neighbours (v4, v6, the v6 link-local).
    assert_eq!(first.network_ops[&NET], 2 + 3 + 3 + 3);
    // The tap: master, MTU and addrgenmode, then up.
    assert_eq!(first.port_ops[&P1], 2);
    assert_eq!(first.ops, 13);

    let log = r.kernel_mut().take_log();
    let tap_ops: Vec<&Op> =
        log.iter().filter(|op| matches!(op, Op::SetLink { name, .. } if name == "tap11111111-aa")).collect();
    let set = |change| Op::SetLink { name: "tap11111111-aa".into(), change };
    assert_eq!(
        tap_ops,
        [
            &set(LinkChange {
                master: Some(Some(BR.into())),
                mtu: Some(1450),
                addrgen_none: Some(true),
                ..Default::default()
            }),
            &set(LinkChange { up: Some(true), ..Default::default() }),
        ]
    );
    let k = r.kernel();
    assert!(k.link_locals.is_empty(), "no IPv6 link-local on {:?}", k.link_locals);
    let vx = &k.links["vxlan-100"];
    assert_eq!((vx.group, vx.master.as_deref(), vx.up), (OWNED_GROUP, Some(BR), true));
    assert_eq!(vx.port, Some(PortFlags { learning: false, neigh_suppress: true }));
    assert_eq!(k.links[BR].mac, Some(crate::desired::bridge_mac(&NET)));

    let second = clean(&mut r, &v).await;
    assert_eq!((second.ops, second.netns_ops), (0, 0));
    assert_eq!(second.wired, first.wired);
    assert!(r.kernel_mut().take_log().is_empty());
}

#[tokio::test]
async fn a_port_added_to_a_wired_network_costs_two_ops_at_most() {
    let mut r = reconciler();
    r.kernel_mut().add_foreign("tap11111111-aa", "tun");
    r.kernel_mut().add_foreign("tap22222222-aa", "tun");
    let mut v = view(vec![(NET, vxlan_net(100))], vec![(P1, compute(NET, "fa:16:3e:00:00:01"))]);
    clean(&mut r, &v).await;
    v.ports.insert(P2, compute(NET, "fa:16:3e:00:00:02"));
    let added = clean(&mut r, &v).await;
    assert_eq!((added.ops, added.port_ops.get(&P2)), (2, Some(&2)));
    assert_eq!(added.wired.len(), 2);

    // A tap already up (it has its link-local by now) or already set to
    // addrgenmode none by its creator: one request.
    let k = r.kernel_mut();
    k.add_foreign("tap33333333-aa", "tun");
    k.links.get_mut("tap33333333-aa").unwrap().up = true;
    k.add_foreign("tap44444444-aa", "tun");
    k.links.get_mut("tap44444444-aa").unwrap().addrgen_none = Some(true);
    for (id, m) in [(P3, "fa:16:3e:00:00:03"), (P4, "fa:16:3e:00:00:04")] {
        v.ports.insert(id, compute(NET, m));
    }
    let added = clean(&mut r, &v).await;
    assert_eq!(added.ops, 2);
    assert_eq!(added.wired.len(), 4);
}

#[tokio::test]
async fn a_tap_is_wired_when_it_appears() {
    let mut r = reconciler();
    let v = view(vec![(NET, vxlan_net(100))], vec![(P1, compute(NET, "fa:16:3e:00:00:01"))]);
    let before = clean(&mut r, &v).await;
    assert!(before.wired.is_empty(), "no tap yet, and that is no error");
    r.kernel_mut().add_foreign("tap11111111-aa", "tun");
    let after = clean(&mut r, &v).await;
    assert_eq!(after.wired, BTreeSet::from([P1]));
    assert_eq!(after.ops, 2);
}

#[tokio::test]
async fn a_device_deleted_by_hand_comes_back_with_its_entries() {
    let mut r = reconciler();
    let v = view_with_remote(vec![]);
    clean(&mut r, &v).await;
    let fdb = r.kernel().fdb.clone();
    assert_eq!(fdb.len(), 3);
    r.kernel_mut().remove_link("vxlan-100");
    assert!(r.kernel().fdb.is_empty());
    let again = clean(&mut r, &v).await;
    // create, configure, up; flood, unicast, static (the neighbours are on
    // the bridge).
    assert_eq!(again.ops, 6);
    assert_eq!(r.kernel().fdb, fdb);
    assert_eq!(clean(&mut r, &v).await.ops, 0);
}

#[tokio::test]
async fn a_deleted_port_is_released_and_a_deleted_network_goes_away_in_bulk() {
    let mut r = reconciler();
    r.kernel_mut().add_foreign("tap11111111-aa", "tun");
    let mut v = view_with_remote(vec![(P1, compute(NET, "fa:16:3e:00:00:01"))]);
    clean(&mut r, &v).await;

    v.ports.clear();
    let released = clean(&mut r, &v).await;
    assert_eq!(released.ops, 1);
    let tap = &r.kernel().links["tap11111111-aa"];
    assert_eq!(tap.master, None, "released, not deleted: the tap is not the agent's");

    v.networks.clear();
    v.remote_ports.clear();
    r.kernel_mut().take_log();
    clean(&mut r, &v).await;
    let log = r.kernel_mut().take_log();
    let doom = LinkChange { group: Some(DOOMED_GROUP), ..Default::default() };
    assert_eq!(
        log,
        [
            Op::SetLink { name: BR.into(), change: doom.clone() },
            Op::SetLink { name: "vxlan-100".into(), change: doom },
            Op::DeleteGroup { group: DOOMED_GROUP },
        ],
        "entries go with their devices; one bulk delete"
    );
    let k = r.kernel();
    assert_eq!(k.links.keys().collect::<Vec<_>>(), ["eth0", "tap11111111-aa"]);
    assert!(k.fdb.is_empty() && k.neighbours.is_empty());
    assert_eq!(clean(&mut r, &v).await.ops, 0);
}

#[tokio::test]
async fn a_single_stale_device_is_deleted_directly() {
    let mut r = reconciler();
    let mut v = view(vec![(NET, vxlan_net(100)), (NET_B, vxlan_net(200))], vec![]);
    clean(&mut r, &v).await;
    r.kernel_mut().take_log();
    // NET_B's bridge and VXLAN go; NET keeps its own.
    v.networks.remove(&NET_B);
    clean(&mut r, &v).await;
    assert_eq!(r.kernel_mut().take_log().len(), 3);
    assert!(!r.kernel().links.contains_key(BR_B));
    // An owned leftover alone: one plain delete.
    let copy = r.kernel().links["vxlan-100"].clone();
    r.kernel_mut().links.insert("vxlan-999".into(), copy);
    r.kernel_mut().links.get_mut("vxlan-999").unwrap().master = None;
    clean(&mut r, &v).await;
    assert_eq!(r.kernel_mut().take_log(), [Op::DeleteLink { name: "vxlan-999".into() }]);
}

#[tokio::test]
async fn devices_the_agent_did_not_create_are_left_alone() {
    let mut r = reconciler();
    let k = r.kernel_mut();
    // Someone's bridge under the name the agent wants, a device of theirs
    // in it, and an unrelated device.
    k.links.insert(
        BR.into(),
        crate::kernel::Link {
            index: 7,
            kind: LinkKind::Bridge { nf_call: false },
            group: 0,
            master: None,
            up: false,
            mtu: 1500,
            mac: None,
            addrgen_none: Some(false),
            port: None,
        },
    );
    k.add_foreign("theirs0", "veth");
    k.links.get_mut("theirs0").unwrap().master = Some(BR.into());
    k.add_foreign("docker0", "bridge");
    k.neighbours.insert(NeighEntry { dev: "docker0".into(), ip: ip("172.17.0.2"), mac: mac("02:42:ac:11:00:02") });
    k.add_foreign("tap11111111-aa", "tun");
    let before = (k.links.clone(), k.neighbours.clone());

    let v = view(vec![(NET, vxlan_net(100))], vec![(P1, compute(NET, "fa:16:3e:00:00:01"))]);
    let outcome = run(&mut r, &v).await;
    assert_eq!(outcome.errors[0], ReconcileError::NotTheAgents { link: BR.into() }, "{:?}", outcome.errors);
    assert!(outcome.wired.is_empty());
    let k = r.kernel();
    assert!(!k.links.contains_key("vxlan-100"), "nothing goes into someone else's bridge");
    assert_eq!(k.links["tap11111111-aa"].master, None);
    for name in [BR, "theirs0", "docker0"] {
        assert_eq!(k.links[name], before.0[name], "{name} untouched");
    }
    assert_eq!(k.neighbours, before.1);
}

#[tokio::test]
async fn foreign_devices_in_an_owned_bridge_are_only_released_when_they_are_port_devices() {
    let mut r = reconciler();
    let v = view(vec![(NET, vxlan_net(100))], vec![]);
    clean(&mut r, &v).await;
    let k = r.kernel_mut();
    k.add_foreign("debug0", "veth");
    k.links.get_mut("debug0").unwrap().master = Some(BR.into());
    k.add_foreign("tapdeadbeef-00", "tun");
    k.links.get_mut("tapdeadbeef-00").unwrap().master = Some(BR.into());
    k.take_log();
    clean(&mut r, &v).await;
    let release = LinkChange { master: Some(None), ..Default::default() };
    assert_eq!(r.kernel_mut().take_log(), [Op::SetLink { name: "tapdeadbeef-00".into(), change: release }]);
    assert_eq!(r.kernel().links["debug0"].master.as_deref(), Some(BR));
}

#[tokio::test]
async fn l2population_follows_remote_ports_exactly() {
    let mut r = reconciler();
    let mut v = view_with_remote(vec![]);
    clean(&mut r, &v).await;
    let vx = "vxlan-100".to_string();

    // The remote port moves to another VTEP: its unicast entry is replaced
    // in place, a flood entry goes and another comes.
    v.remote_ports.get_mut(&R1).unwrap().vtep = ip("172.31.0.13");
    r.kernel_mut().take_log();
    clean(&mut r, &v).await;
    let log = r.kernel_mut().take_log();
    assert_eq!(
        log,
        [
            Op::DelFdb(FdbEntry::Remote { dev: vx.clone(), mac: Mac::ZERO, dst: ip("172.31.0.12") }),
            Op::AddFdb(FdbEntry::Remote { dev: vx.clone(), mac: mac("fa:16:3e:00:01:12"), dst: ip("172.31.0.13") }),
            Op::AddFdb(FdbEntry::Remote { dev: vx.clone(), mac: Mac::ZERO, dst: ip("172.31.0.13") }),
        ]
    );

    // A second remote port: two FDB entries and one neighbour, nothing else.
    let second: RemotePort = remote(NET, "172.31.0.13", "fa:16:3e:00:01:13", &["10.0.0.13"]);
    v.remote_ports.insert(R2, second);
    assert_eq!(clean(&mut r, &v).await.ops, 3);

    // Everything of the first port goes when it does, and only that.
    v.remote_ports.remove(&R1);
    r.kernel_mut().take_log();
    clean(&mut r, &v).await;
    let log = r.kernel_mut().take_log();
    assert_eq!(log.len(), 5, "unicast, static, three neighbours: {log:#?}");
    assert!(log.iter().all(|op| matches!(op, Op::DelFdb(_) | Op::DelNeigh(_))));
    let k = r.kernel();
    assert!(k.fdb.iter().all(|e| !matches!(e, FdbEntry::Remote { mac: m, .. } | FdbEntry::Static { mac: m, .. } if *m == mac("fa:16:3e:00:01:12"))));
    assert_eq!(k.neighbours.len(), 1);

    // Entries added or changed by hand are put back in line.
    let k = r.kernel_mut();
    k.neighbours.clear();
    k.fdb.insert(FdbEntry::Static { port: vx.clone(), mac: mac("fa:16:3e:00:09:99") });
    assert_eq!(clean(&mut r, &v).await.ops, 2);
}

#[tokio::test]
async fn a_dhcp_port_gets_its_namespace_side_in_few_ops() {
    let mut r = reconciler();
    let mut dhcp = port(NET, "fa:16:3e:00:00:02", device_owner::DHCP);
    dhcp.fixed_ips = vec![
        FixedIp { subnet_id: S4, ip_address: ip("10.0.0.2") },
        FixedIp { subnet_id: S6, ip_address: ip("2001:db8:1::2") },
    ];
    let mut v = view(vec![(NET, vxlan_net(100))], vec![(DHCP, dhcp)]);
    v.dhcp.insert(NET, dhcp_service(DHCP));
    let first = clean(&mut r, &v).await;
    assert_eq!(first.wired, BTreeSet::from([DHCP]));
    // veth create (peer born in the namespace with its MAC and MTU),
    // addrgenmode of the host side, the peer up, two addresses, the host
    // side up; `lo` up is the network's.
    assert_eq!(first.port_ops[&DHCP], 6);
    assert_eq!(first.network_ops[&NET], 2 + 3 + 1);
    assert_eq!(first.netns_ops, 1);
    let ns = format!("lab-h1-qdhcp-{NET}");
    let k = r.kernel();
    let inner = &k.namespaces[&ns].links["ns-9d8c7b6a-aa"];
    assert_eq!((inner.up, inner.mtu, inner.mac), (true, 1450, Some(mac("fa:16:3e:00:00:02"))));
    assert_eq!(inner.addresses.len(), 2);
    assert!(k.namespaces[&ns].links["lo"].up);
    assert_eq!(k.links["tap9d8c7b6a-aa"].master.as_deref(), Some(BR));
    assert_eq!(clean(&mut r, &v).await.ops, 0);

    // An address removed by hand, one added by hand, the MTU changed.
    let k = r.kernel_mut();
    let inner = k.namespaces.get_mut(&ns).unwrap().links.get_mut("ns-9d8c7b6a-aa").unwrap();
    inner.addresses.pop_first();
    inner.addresses.insert("10.0.0.99/24".parse().unwrap());
    inner.mtu = 1500;
    k.take_log();
    assert_eq!(clean(&mut r, &v).await.ops, 3);
    assert!(r.kernel_mut().take_log().contains(&Op::NsSetLink {
        ns: ns.clone(),
        name: "ns-9d8c7b6a-aa".into(),
        change: NsLinkChange { mtu: Some(1450), ..Default::default() },
    }));

    // The namespace deleted by hand: everything comes back.
    r.kernel_mut().apply(&[Op::DeleteNetns { name: ns.clone() }]).await;
    assert!(!r.kernel().links.contains_key("tap9d8c7b6a-aa"));
    let back = clean(&mut r, &v).await;
    assert_eq!(back.wired.len(), 1);
    assert!(r.kernel().namespaces.contains_key(&ns));

    // The service leaves: veth and namespace go.
    v.ports.clear();
    v.dhcp.clear();
    clean(&mut r, &v).await;
    assert!(!r.kernel().links.contains_key("tap9d8c7b6a-aa"));
    assert!(!r.kernel().namespaces.contains_key(&ns));
}

#[tokio::test]
async fn stale_namespaces_under_the_prefix_are_deleted_and_others_kept() {
    let mut r = reconciler();
    let k = r.kernel_mut();
    for name in ["lab-h1-qdhcp-gone", "lab-h2-qdhcp-other-host", "lab-h1-qrouter-r1", "lab-h2-qrouter-r2", "inner"] {
        k.apply(&[Op::CreateNetns { name: name.into() }]).await;
    }
    let v = view(vec![], vec![]);
    clean(&mut r, &v).await;
    assert_eq!(
        r.kernel().namespaces.keys().collect::<Vec<_>>(),
        ["inner", "lab-h2-qdhcp-other-host", "lab-h2-qrouter-r2"]
    );
}

#[tokio::test]
async fn a_failing_op_does_not_stop_the_others() {
    let mut r = reconciler();
    r.kernel_mut().add_foreign("tap11111111-aa", "tun");
    r.kernel_mut().add_foreign("tap22222222-aa", "tun");
    r.kernel_mut().fail_when(|op| matches!(op, Op::CreateLink { name, .. } if name == BR));
    let v = view(
        vec![(NET, vxlan_net(100)), (NET_B, vxlan_net(200))],
        vec![(P1, compute(NET, "fa:16:3e:00:00:01")), (P2, compute(NET_B, "fa:16:3e:00:00:02"))],
    );
    let outcome = run(&mut r, &v).await;
    assert_eq!(outcome.wired, BTreeSet::from([P2]));
    assert!(
        outcome.errors.iter().any(|e| matches!(e, ReconcileError::Op { op: Op::CreateLink { name, .. }, owner, error }
            if name == BR && *owner == Owner::Network(NET) && error.message.contains("injected"))),
        "{:?}",
        outcome.errors
    );
    assert!(
        outcome
            .errors
            .iter()
            .any(|e| matches!(e, ReconcileError::Skipped { op: Op::SetLink { name, .. }, .. } if name == BR)),
        "the bridge's own set-up is skipped: {:?}",
        outcome.errors
    );
    r.kernel_mut().clear_failures();
    let healed = clean(&mut r, &v).await;
    assert_eq!(healed.wired.len(), 2);
}

#[tokio::test]
async fn drift_is_corrected_in_place_or_by_recreation() {
    let mut r = reconciler();
    r.kernel_mut().add_foreign("tap11111111-aa", "tun");
    let v = view_with_remote(vec![(P1, compute(NET, "fa:16:3e:00:00:01"))]);
    clean(&mut r, &v).await;
    r.kernel_mut().take_log();

    // Port flags and MTU by hand: one set each.
    let k = r.kernel_mut();
    k.links.get_mut("vxlan-100").unwrap().port = Some(PortFlags { learning: true, neigh_suppress: false });
    k.links.get_mut("tap11111111-aa").unwrap().mtu = 1500;
    assert_eq!(clean(&mut r, &v).await.ops, 2);

    // The bridge MAC changed: the kernel flushed its neighbours; both return.
    r.kernel_mut()
        .apply(&[Op::SetLink {
            name: BR.into(),
            change: LinkChange { mac: Some(mac("02:00:00:00:00:99")), ..Default::default() },
        }])
        .await;
    assert!(r.kernel().neighbours.is_empty());
    assert_eq!(clean(&mut r, &v).await.ops, 1 + 3);

    // VXLAN settings that cannot change in place: recreated, entries re-added.
    if let LinkKind::Vxlan(attrs) = &mut r.kernel_mut().links.get_mut("vxlan-100").unwrap().kind {
        attrs.learning = true;
    }
    r.kernel_mut().take_log();
    let again = clean(&mut r, &v).await;
    let log = r.kernel_mut().take_log();
    assert_eq!(log[0], Op::DeleteLink { name: "vxlan-100".into() });
    assert!(matches!(&log[1], Op::CreateLink { name, .. } if name == "vxlan-100"));
    assert_eq!(again.ops, 1 + 3 + 3, "delete, create, configure, up, three FDB entries: {log:#?}");

    // A tap taken out of its bridge, or brought down, is put back.
    r.kernel_mut().links.get_mut("tap11111111-aa").unwrap().master = None;
    assert_eq!(clean(&mut r, &v).await.ops, 1);
    assert_eq!(clean(&mut r, &v).await.ops, 0);
}

#[tokio::test]
async fn a_port_that_is_down_is_kept_down_and_not_wired() {
    let mut r = reconciler();
    r.kernel_mut().add_foreign("tap11111111-aa", "tun");
    r.kernel_mut().links.get_mut("tap11111111-aa").unwrap().up = true;
    let mut p = compute(NET, "fa:16:3e:00:00:01");
    p.admin_state_up = false;
    let v = view(vec![(NET, vxlan_net(100))], vec![(P1, p)]);
    let outcome = clean(&mut r, &v).await;
    assert!(outcome.wired.is_empty());
    let tap = &r.kernel().links["tap11111111-aa"];
    assert_eq!((tap.up, tap.master.as_deref()), (false, Some(BR)));
}

#[tokio::test]
async fn leftovers_of_an_interrupted_bulk_delete_are_finished() {
    let mut r = reconciler();
    let v = view(vec![(NET, vxlan_net(100))], vec![]);
    clean(&mut r, &v).await;
    // A crash between "doom" and "delete group": the bridge is doomed.
    r.kernel_mut().links.get_mut(BR).unwrap().group = DOOMED_GROUP;
    r.kernel_mut().take_log();
    clean(&mut r, &v).await;
    let log = r.kernel_mut().take_log();
    assert_eq!(log[0], Op::DeleteLink { name: BR.into() });
    assert_eq!(r.kernel().links[BR].group, OWNED_GROUP);
    assert_eq!(clean(&mut r, &v).await.ops, 0);
}

#[tokio::test]
async fn flat_and_vlan_segments() {
    let mut r = reconciler();
    r.kernel_mut().add_foreign("eth1", "");
    let mut v = view(vec![(NET, flat_net()), (NET_B, vlan_net(120))], vec![]);
    clean(&mut r, &v).await;
    let k = r.kernel();
    assert_eq!(k.links["eth1"].master.as_deref(), Some(BR));
    assert!(k.links["eth1"].up);
    assert_eq!(k.links["eth1"].mtu, 1500, "the physical interface's MTU is the operator's");
    assert_eq!(k.links["eth1.120"].kind, LinkKind::Vlan { parent: Some("eth1".into()), vid: 120 });
    assert_eq!(k.links["eth1.120"].master.as_deref(), Some(BR_B));
    assert_eq!(clean(&mut r, &v).await.ops, 0);

    // The flat network leaves: its bridge goes, eth1 stays (released).
    v.networks.remove(&NET);
    clean(&mut r, &v).await;
    let k = r.kernel();
    assert!(!k.links.contains_key(BR));
    assert_eq!((k.links["eth1"].master.as_deref(), k.links["eth1"].group), (None, 0));
}
