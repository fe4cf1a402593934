use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;

use neutrino_model::NetworkId;
use neutrino_proto::PortView;
use neutrino_proto::containers::{ContainerDns, ContainerIp, ContainerRoute};

use super::*;

/// A server holding attachments in memory.
#[derive(Default)]
struct FakeServer {
    ports: StdMutex<BTreeMap<AttachmentKey, PortId>>,
    refuse: Option<CniError>,
}

fn container_port(id: PortId) -> ContainerPort {
    ContainerPort {
        port_id: id,
        network_id: NetworkId::new(),
        mac: "fa:16:3e:00:00:05".parse().unwrap(),
        mtu: 1450,
        ips: vec![ContainerIp { address: "10.0.0.5/24".parse().unwrap(), gateway: Some("10.0.0.1".parse().unwrap()) }],
        routes: vec![ContainerRoute { dst: "0.0.0.0/0".parse().unwrap(), gw: "10.0.0.1".parse().unwrap() }],
        dns: ContainerDns::default(),
        published_on: None,
    }
}

impl Server for FakeServer {
    async fn attach(&self, req: &ContainerAttach) -> Result<ContainerPort, CniError> {
        if let Some(e) = &self.refuse {
            return Err(e.clone());
        }
        let mut ports = self.ports.lock().unwrap();
        let id = match ports.get(&req.key) {
            Some(id) => *id,
            None if req.create => *ports.entry(req.key.clone()).or_default(),
            None => return Err(CniError::new(ErrorCode::Refused, "no port", "")),
        };
        Ok(container_port(id))
    }

    async fn detach(&self, key: &AttachmentKey) -> Result<Option<PortId>, CniError> {
        Ok(self.ports.lock().unwrap().remove(key))
    }

    async fn attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let ports = self.ports.lock().unwrap();
        Ok(ports
            .iter()
            .map(|(k, id)| Attachment { key: k.clone(), port_id: *id, network_id: NetworkId::new() })
            .collect())
    }
}

/// Host links in memory; `plug` can be made to fail.
#[derive(Default)]
struct FakePlumbing {
    links: StdMutex<BTreeSet<String>>,
    fail_plug: bool,
}

impl Plumbing for FakePlumbing {
    async fn plug(&self, iface: &ContainerIface) -> Result<(), KernelError> {
        // A failure after the pair was made: the undo must remove it.
        self.links.lock().unwrap().insert(iface.host_end.clone());
        if self.fail_plug { Err(KernelError::errno(17, "File exists")) } else { Ok(()) }
    }

    async fn unplug(&self, host_end: &str) -> Result<(), KernelError> {
        self.links.lock().unwrap().remove(host_end);
        Ok(())
    }

    async fn host_links(&self) -> Result<BTreeSet<String>, KernelError> {
        Ok(self.links.lock().unwrap().clone())
    }

    async fn inspect(&self, _: &Path, _: &str) -> Result<Option<IfaceState>, KernelError> {
        Ok(None)
    }
}

struct Harness {
    service: Arc<CniService<FakeServer, FakePlumbing>>,
    wired: watch::Sender<Arc<BTreeSet<PortId>>>,
    view: watch::Sender<Option<Arc<HostView>>>,
}

fn harness(server: FakeServer, plumbing: FakePlumbing) -> Harness {
    let (wired, wired_rx) = watch::channel(Arc::new(BTreeSet::new()));
    let (view, view_rx) = watch::channel(Some(Arc::new(HostView::default())));
    let service = CniService::new(server, plumbing, wired_rx, view_rx).with_wire_timeout(Duration::from_millis(300));
    Harness { service: Arc::new(service), wired, view }
}

fn key(container: &str) -> AttachmentKey {
    AttachmentKey { container_id: container.into(), ifname: "eth0".into(), cni_network: "web".into() }
}

fn add(container: &str) -> Request {
    Request::Add {
        key: key(container),
        // A path that exists: the fake plumbing never enters it.
        netns: "/".into(),
        network: "net1".into(),
        project: "demo".into(),
        security_groups: vec![],
        dns_name: Some(container.into()),
        port_mappings: vec![],
        floating_ip: None,
        external_network: None,
    }
}

/// Marks every port the server has as wired, as the reconcile would once
/// it sees the tap.
fn wire_all(h: &Harness) {
    let ports: BTreeSet<PortId> = h.service.server.ports.lock().unwrap().values().copied().collect();
    h.wired.send_replace(Arc::new(ports));
}

#[tokio::test]
async fn add_answers_once_the_port_is_wired() {
    let h = harness(FakeServer::default(), FakePlumbing::default());
    let service = h.service.clone();
    let pending = tokio::spawn(async move { service.handle(add("c1")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished(), "not before the port is wired");
    wire_all(&h);
    let Reply::Added { result } = pending.await.unwrap() else { panic!("not added") };
    let port = *h.service.server.ports.lock().unwrap().get(&key("c1")).unwrap();
    assert_eq!(result.host_ifname, tap_name(&port));
    assert_eq!((result.ifname.as_str(), result.mtu, result.sandbox.as_str()), ("eth0", 1450, "/"));
    assert_eq!(result.ips[0].address.to_string(), "10.0.0.5/24");
    assert!(h.service.plumbing.links.lock().unwrap().contains(&tap_name(&port)));
    assert!(h.service.in_flight.lock().await.is_empty());
}

#[tokio::test]
async fn a_failed_add_leaves_no_port_and_no_interface() {
    // The kernel refuses.
    let h = harness(FakeServer::default(), FakePlumbing { fail_plug: true, ..Default::default() });
    let Reply::Failed { code, .. } = h.service.handle(add("c1")).await else { panic!("added") };
    assert_eq!(code, ErrorCode::Io as u32);
    assert!(h.service.server.ports.lock().unwrap().is_empty());
    assert!(h.service.plumbing.links.lock().unwrap().is_empty());
    // Never wired.
    let h = harness(FakeServer::default(), FakePlumbing::default());
    let Reply::Failed { code, msg, .. } = h.service.handle(add("c1")).await else { panic!("added") };
    assert_eq!(code, ErrorCode::TryAgainLater as u32, "{msg}");
    assert!(h.service.server.ports.lock().unwrap().is_empty());
    assert!(h.service.plumbing.links.lock().unwrap().is_empty());
    // The server refuses: its words, nothing made.
    let refused = CniError::new(ErrorCode::Refused, "Network net9 could not be found for project demo.", "");
    let h = harness(FakeServer { refuse: Some(refused), ..Default::default() }, FakePlumbing::default());
    let Reply::Failed { code, msg, .. } = h.service.handle(add("c1")).await else { panic!("added") };
    assert_eq!((code, msg.as_str()), (100, "Network net9 could not be found for project demo."));
    assert!(h.service.plumbing.links.lock().unwrap().is_empty());
}

#[tokio::test]
async fn add_needs_the_namespace_and_a_view() {
    let h = harness(FakeServer::default(), FakePlumbing::default());
    let Request::Add { key, network, project, security_groups, dns_name, port_mappings, .. } = add("c1") else {
        unreachable!()
    };
    let missing = Request::Add {
        key,
        netns: "/run/netns/no-such-namespace".into(),
        network,
        project,
        security_groups,
        dns_name,
        port_mappings,
        floating_ip: None,
        external_network: None,
    };
    let Reply::Failed { code, .. } = h.service.handle(missing).await else { panic!() };
    assert_eq!(code, ErrorCode::InvalidEnvironment as u32);
    h.view.send_replace(None);
    let Reply::Failed { code, .. } = h.service.handle(add("c1")).await else { panic!() };
    assert_eq!(code, ErrorCode::TryAgainLater as u32);
    let Reply::Failed { code, .. } = h.service.handle(Request::Status).await else { panic!() };
    assert_eq!(code, ErrorCode::NotAvailable as u32);
    assert!(h.service.server.ports.lock().unwrap().is_empty());
}

#[tokio::test]
async fn del_is_idempotent_and_removes_port_and_interface() {
    let h = harness(FakeServer::default(), FakePlumbing::default());
    let service = h.service.clone();
    let pending = tokio::spawn(async move { service.handle(add("c1")).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    wire_all(&h);
    assert!(matches!(pending.await.unwrap(), Reply::Added { .. }));
    for _ in 0..2 {
        let reply = h.service.handle(Request::Del { key: key("c1"), netns: None }).await;
        assert_eq!(reply, Reply::Done);
        assert!(h.service.server.ports.lock().unwrap().is_empty());
        assert!(h.service.plumbing.links.lock().unwrap().is_empty());
    }
    assert_eq!(h.service.handle(Request::Del { key: key("never"), netns: None }).await, Reply::Done);
}

#[tokio::test]
async fn gc_removes_only_this_networks_attachments_the_runtime_lost() {
    let h = harness(FakeServer::default(), FakePlumbing::default());
    let other = AttachmentKey { cni_network: "db".into(), ..key("c3") };
    for k in [key("c1"), key("c2"), other.clone()] {
        h.service.server.ports.lock().unwrap().insert(k, PortId::new());
    }
    let valid = vec![ValidAttachment { container_id: "c1".into(), ifname: "eth0".into() }];
    assert_eq!(h.service.handle(Request::Gc { cni_network: "web".into(), valid }).await, Reply::Done);
    let left: BTreeSet<AttachmentKey> = h.service.server.ports.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, BTreeSet::from([key("c1"), other]));
}

#[tokio::test]
async fn the_sweep_removes_ports_without_interface_but_not_those_being_made() {
    let h = harness(FakeServer::default(), FakePlumbing::default());
    let mut view = HostView::default();
    let network = NetworkId::new();
    let port_view = |owner: &str, device: &str| PortView {
        network_id: network,
        mac: "fa:16:3e:00:00:05".parse().unwrap(),
        fixed_ips: vec![],
        device_owner: owner.into(),
        device_id: device.into(),
        admin_state_up: true,
        port_security_enabled: true,
        allowed_address_pairs: vec![],
        security_groups: vec![],
    };
    for (container, has_tap) in [("gone", false), ("alive", true), ("starting", false)] {
        let id = PortId::new();
        h.service.server.ports.lock().unwrap().insert(key(container), id);
        view.ports.insert(id, port_view(CONTAINER_OWNER, container));
        if has_tap {
            h.service.plumbing.links.lock().unwrap().insert(tap_name(&id));
        }
    }
    // A VM's port whose tap is not there yet is not the sweep's.
    view.ports.insert(PortId::new(), port_view("compute:nova", "vm1"));
    h.view.send_replace(Some(Arc::new(view)));
    h.service.in_flight.lock().await.insert("starting".into());
    assert_eq!(h.service.sweep().await.unwrap(), 1);
    let left: BTreeSet<String> =
        h.service.server.ports.lock().unwrap().keys().map(|k| k.container_id.clone()).collect();
    assert_eq!(left, BTreeSet::from(["alive".to_string(), "starting".to_string()]));
}
