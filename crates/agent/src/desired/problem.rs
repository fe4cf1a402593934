//! What can make a host view unrealisable on this host, naming the port or
//! network it is about. A correct server sends none of these for a host
//! set up as it registered; each is reported and retried on every pass,
//! and the rest of the view is realised regardless.

use neutrino_model::{NetworkId, PortId};

/// One problem of the view, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The network's bridge or segment device cannot be made: none of its
    /// ports is wired.
    #[error("network {network}: {reason}")]
    Network { network: NetworkId, reason: Reason },
    /// The port's device cannot be made.
    #[error("port {port}: {reason}")]
    Port { port: PortId, reason: Reason },
    /// An l2population entry for a port behind another VTEP is left out.
    #[error("remote port {port}: {reason}")]
    RemotePort { port: PortId, reason: Reason },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("VXLAN network but the agent has no tunnel IP")]
    NoTunnelIp,
    #[error("no bridge mapping for physical network {physical_network}")]
    NoBridgeMapping { physical_network: String },
    #[error("interface {interface} already carries network {network}")]
    UplinkTaken { interface: String, network: NetworkId },
    #[error("device name {name} is longer than {max} characters")]
    NameTooLong { name: String, max: usize },
    #[error("device {name} is already used")]
    NameTaken { name: String },
    #[error("network {network} is not in the host view")]
    NetworkNotInView { network: NetworkId },
    #[error("network {network} is not a VXLAN network on this host")]
    NotVxlan { network: NetworkId },
}
