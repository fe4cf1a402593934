//! The security-group sections of a host view.
//!
//! - `security_groups`: the groups of the host's filtered ports
//!   ([`PortView::filtered`]) among the ports of its view. A group the
//!   cloud does not know (a row that could not be read, logged) is left
//!   out: the agent then has none of its rules, so it lets nothing more in.
//! - `group_members`: for each group that a rule of those groups names as
//!   its remote group, one entry per port that lists that group, wherever
//!   the port is (bound or not), with [`MemberAddresses::of`] the port.
//!
//! Both are derived: the first from the host's ports (counted per group,
//! so that a port change is handled without looking at the host's other
//! ports), the second from the cloud's group -> ports index, so that a
//! membership change is one entry per referencing host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use neutrino_model::SecurityGroupId;
use neutrino_proto::{GroupMember, MemberAddresses, PortView, SecurityGroupView};

use crate::cloud::Cloud;
use crate::cloud_sg::remote_groups_of;

/// A host's `security_groups` section, values shared with the cloud.
pub type GroupSections = BTreeMap<SecurityGroupId, Arc<SecurityGroupView>>;

/// How many filtered ports of a host list each group.
pub type GroupCounts = BTreeMap<SecurityGroupId, usize>;

/// Adds (or takes away) `port`'s groups to a host's counts, if the host
/// filters it.
pub fn count_groups(counts: &mut GroupCounts, port: &PortView, add: bool) {
    if !port.filtered() {
        return;
    }
    for group in &port.security_groups {
        if add {
            *counts.entry(*group).or_default() += 1;
        } else if let Some(n) = counts.get_mut(group) {
            *n -= 1;
            if *n == 0 {
                counts.remove(group);
            }
        }
    }
}

/// The section for the groups a host's filtered ports use.
pub fn sections<'a>(cloud: &Cloud, used: impl IntoIterator<Item = &'a SecurityGroupId>) -> GroupSections {
    used.into_iter().filter_map(|g| Some((*g, cloud.groups.get(g)?.view.clone()))).collect()
}

/// The remote groups named by the rules of a host's groups.
pub fn remote_groups(sections: &GroupSections) -> BTreeSet<SecurityGroupId> {
    remote_groups_of(sections.values().map(Arc::as_ref))
}

/// The `group_members` entries of one remote group.
pub fn members<'a>(
    cloud: &'a Cloud,
    group: &'a SecurityGroupId,
) -> impl Iterator<Item = (GroupMember, MemberAddresses)> + 'a {
    cloud.ports_of_group(group).iter().filter_map(move |port| {
        let rec = cloud.ports.get(port)?;
        Some((GroupMember { group: *group, port: *port }, MemberAddresses::of(&rec.view)))
    })
}

/// A host's whole `group_members` section.
pub fn group_members(cloud: &Cloud, sections: &GroupSections) -> BTreeMap<GroupMember, MemberAddresses> {
    remote_groups(sections).iter().flat_map(|g| members(cloud, g).collect::<Vec<_>>()).collect()
}
