//! Neutrino's resource model: pure types and rules, no I/O and no async.
//!
//! Everything the other layers agree on lives here: typed ids, the error
//! type with its Neutron names, IPAM arithmetic, MACs and EUI-64, segment
//! and MTU rules, quota limits and the policy vocabulary.

pub mod agents;
pub mod dns;
pub mod error;
pub mod identity;
pub mod ids;
pub mod ipam;
pub mod l3;
pub mod mac;
pub mod policy;
pub mod quota;
pub mod resources;
pub mod security_groups;
pub mod segments;
pub mod subnets;

pub use error::{Error, ErrorClass, ResourceKind, Result};
pub use ids::*;
pub use mac::MacAddress;
