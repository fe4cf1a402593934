//! Routers with the fake kernel: a `qrouter-` namespace per router with
//! its `qr-`/`qg-` veths, addresses, routes and forwarding, in the fewest
//! ops, idempotent, and cleaned up when interfaces or routers go.

use std::collections::BTreeSet;

use neutrino_proto::HostRoute;

use super::*;
use crate::desired::tests::router::{FIP, RG, RI, ROUTER, fip, routed_view, router_view};
use crate::desired::tests::settings;
use crate::kernel::fake::FakeKernel;
use crate::kernel::{NsRoute, Op};

const NS: &str = "lab-h1-qrouter-0a0a0a0a-0000-4000-8000-00000000000a";
const QR: &str = "qr-1a1a1a1a-aa";
const QG: &str = "qg-2b2b2b2b-aa";

fn reconciler() -> Reconciler<FakeKernel> {
    let mut k = FakeKernel::new();
    k.add_foreign("eth0", "");
    Reconciler::new(k, settings())
}

async fn clean(r: &mut Reconciler<FakeKernel>, v: &HostView) -> Outcome {
    let outcome = r.reconcile(v).await;
    assert!(outcome.observed);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    outcome
}

fn route(dst: &str, via: &str) -> NsRoute {
    NsRoute { dst: dst.parse().unwrap(), via: via.parse().unwrap() }
}

fn net(a: &str) -> ipnet::IpNet {
    a.parse().unwrap()
}

#[tokio::test]
async fn a_router_becomes_a_namespace_with_its_veths_in_few_ops_and_a_second_run_makes_none() {
    let mut r = reconciler();
    let v = routed_view(router_view());
    let first = clean(&mut r, &v).await;
    assert_eq!(first.wired, BTreeSet::from([RI, RG]));
    let k = r.kernel();
    let ns = &k.namespaces[NS];
    assert!(ns.forwarding);
    assert_eq!(ns.routes, BTreeSet::from([route("0.0.0.0/0", "203.0.113.1"), route("::/0", "2001:db8:ff::1")]));
    let qr = &ns.links[QR];
    assert!(qr.up);
    assert_eq!(qr.mtu, 1450);
    assert_eq!(qr.mac, Some("fa:16:3e:00:0a:01".parse().unwrap()));
    assert_eq!(qr.addresses, BTreeSet::from([net("10.0.0.1/24"), net("fd00::1/64")]));
    assert_eq!(ns.links[QG].addresses, BTreeSet::from([net("203.0.113.10/24"), net("2001:db8:ff::10/64")]));
    assert!(ns.links["lo"].up);
    // The host ends are the ports' taps, in their networks' bridges.
    assert_eq!(k.links["tap1a1a1a1a-aa"].master.as_deref(), Some("brq6f1d2a3b-11"));
    assert_eq!(k.links["tap2b2b2b2b-aa"].master.as_deref(), Some("brq7e2c3b4a-22"));
    // In the namespace: its mount, lo up, each peer up, four addresses,
    // forwarding and two default routes.
    let log = r.kernel_mut().take_log();
    let router_ops: Vec<_> = log
        .iter()
        .filter(|op| match op {
            Op::NsAddRoute { .. } | Op::NsEnableForwarding { .. } | Op::CreateNetns { .. } => true,
            Op::NsSetLink { ns, .. } | Op::NsAddAddress { ns, .. } => ns == NS,
            _ => false,
        })
        .collect();
    assert_eq!(router_ops.len(), 1 + 1 + 2 + 4 + 1 + 2, "{router_ops:#?}");

    let second = clean(&mut r, &v).await;
    assert_eq!(second.ops + second.netns_ops, 0);
    assert!(r.kernel_mut().take_log().is_empty());
    assert_eq!(second.wired, BTreeSet::from([RI, RG]));
}

#[tokio::test]
async fn a_floating_ip_is_one_address_and_an_extra_route_one_route() {
    let mut r = reconciler();
    let mut router = router_view();
    clean(&mut r, &routed_view(router.clone())).await;
    r.kernel_mut().take_log();

    router.floating_ips.push(fip("203.0.113.20", "10.0.0.5"));
    router.routes.push(HostRoute { destination: net("10.9.0.0/16"), nexthop: "10.0.0.254".parse().unwrap() });
    clean(&mut r, &routed_view(router.clone())).await;
    assert_eq!(
        r.kernel_mut().take_log(),
        vec![
            Op::NsAddAddress { ns: NS.into(), dev: QG.into(), addr: net("203.0.113.20/32") },
            Op::NsAddRoute { ns: NS.into(), route: route("10.9.0.0/16", "10.0.0.254") },
        ]
    );
    assert_eq!(router.floating_ips[0].id, FIP);

    // A new nexthop replaces the route in one op; removing both undoes them.
    router.routes[0].nexthop = "10.0.0.253".parse().unwrap();
    clean(&mut r, &routed_view(router.clone())).await;
    assert_eq!(
        r.kernel_mut().take_log(),
        vec![Op::NsAddRoute { ns: NS.into(), route: route("10.9.0.0/16", "10.0.0.253") }]
    );
    router.routes.clear();
    router.floating_ips.clear();
    clean(&mut r, &routed_view(router)).await;
    let log = r.kernel_mut().take_log();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log.contains(&Op::NsDelRoute { ns: NS.into(), route: route("10.9.0.0/16", "10.0.0.253") }));
    assert!(log.contains(&Op::NsDelAddress { ns: NS.into(), dev: QG.into(), addr: net("203.0.113.20/32") }));
}

#[tokio::test]
async fn a_detached_interface_loses_its_veth_and_the_namespace_stays() {
    let mut r = reconciler();
    clean(&mut r, &routed_view(router_view())).await;
    let mut router = router_view();
    router.interfaces.clear();
    let mut v = routed_view(router);
    v.ports.remove(&RI);
    let outcome = clean(&mut r, &v).await;
    assert_eq!(outcome.wired, BTreeSet::from([RG]));
    let k = r.kernel();
    assert!(!k.links.contains_key("tap1a1a1a1a-aa"));
    assert!(!k.namespaces[NS].links.contains_key(QR));
    assert!(k.namespaces[NS].links.contains_key(QG));
}

#[tokio::test]
async fn a_deleted_or_moved_router_takes_its_whole_namespace_and_nothing_foreign() {
    let mut r = reconciler();
    clean(&mut r, &routed_view(router_view())).await;
    let k = r.kernel_mut();
    k.apply(&[Op::CreateNetns { name: "lab-h2-qrouter-other".into() }, Op::CreateNetns { name: "qrouter-x".into() }])
        .await;
    k.add_foreign("tap99999999-aa", "tun");
    let mut v = routed_view(router_view());
    v.routers.remove(&ROUTER);
    v.ports.clear();
    clean(&mut r, &v).await;
    let k = r.kernel();
    assert_eq!(k.namespaces.keys().collect::<Vec<_>>(), ["lab-h2-qrouter-other", "qrouter-x"]);
    assert!(!k.links.contains_key("tap1a1a1a1a-aa") && !k.links.contains_key("tap2b2b2b2b-aa"));
    assert!(k.links.contains_key("tap99999999-aa"));
}

#[tokio::test]
async fn a_router_port_whose_router_is_not_in_the_view_is_not_wired() {
    let mut r = reconciler();
    let mut v = routed_view(router_view());
    v.routers.clear();
    let outcome = r.reconcile(&v).await;
    assert!(outcome.wired.is_empty());
    assert!(r.kernel().namespaces.is_empty());
}

#[tokio::test]
async fn a_port_forwardings_floating_ip_is_on_the_gateway_too() {
    use crate::desired::tests::router::pf;
    let mut r = reconciler();
    let mut router = router_view();
    router.port_forwardings.push(pf(
        "203.0.113.30",
        neutrino_proto::L4Protocol::Tcp,
        (2222, 2222),
        "10.0.0.5",
        (22, 22),
    ));
    clean(&mut r, &routed_view(router)).await;
    assert!(r.kernel().namespaces[NS].links[QG].addresses.contains(&net("203.0.113.30/32")));
}
