//! Whether the agent takes a snapshot the server sends (issue 8: a
//! control-plane restart never touches the dataplane).
//!
//! Revisions come from the server's change feed and only grow, across
//! server restarts too. A snapshot that goes back in revisions and would
//! take away most of what the agent has is not a change anybody made: it
//! is a server serving from behind (a restored or half-initialised
//! database). Applying it would tear down forwarding for every instance on
//! the host, so the agent keeps its view and says so; an operator who
//! means it restarts the agent, which then has no view to protect.

use neutrino_proto::HostView;

/// A snapshot the agent will not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing the host view snapshot at revision {offered_revision}: the agent holds revision {held_revision}, \
     and the snapshot would remove {removed_ports} of its {held_ports} ports; keeping the current view \
     (restart the agent to accept the server's view)"
)]
pub struct Refusal {
    pub held_revision: u64,
    pub offered_revision: u64,
    pub held_ports: usize,
    pub removed_ports: usize,
}

/// `Ok` when `offered` may replace `held`: there is no view yet, the
/// revision does not go back, or it removes at most half of the ports.
pub fn judge_snapshot(held: Option<&HostView>, offered: &HostView) -> Result<(), Refusal> {
    let Some(held) = held else { return Ok(()) };
    if offered.revision >= held.revision {
        return Ok(());
    }
    let removed = held.ports.keys().filter(|id| !offered.ports.contains_key(*id)).count();
    if removed == 0 || removed * 2 <= held.ports.len() {
        return Ok(());
    }
    Err(Refusal {
        held_revision: held.revision,
        offered_revision: offered.revision,
        held_ports: held.ports.len(),
        removed_ports: removed,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::desired::tests::{NET, port, port_id};

    /// A view at `revision` holding the ports numbered `ports`.
    pub fn view(revision: u64, ports: impl IntoIterator<Item = u128>) -> HostView {
        let port = port(NET, "fa:16:3e:00:00:01", "compute:nova");
        let ports = ports.into_iter().map(|n| (port_id(n), port.clone())).collect();
        HostView { host: "h1".into(), revision, ports, ..Default::default() }
    }

    #[test]
    fn a_lower_revision_that_removes_most_ports_is_refused() {
        let held = view(100, 1..=4);
        let refused = judge_snapshot(Some(&held), &view(7, [1])).unwrap_err();
        assert_eq!(refused, Refusal { held_revision: 100, offered_revision: 7, held_ports: 4, removed_ports: 3 });
        // Empty, as a server that has not computed anything would send it.
        assert!(judge_snapshot(Some(&held), &view(0, [])).is_err());
        let text = refused.to_string();
        assert!(text.contains("revision 7") && text.contains("revision 100") && text.contains("3 of its 4"), "{text}");
    }

    #[test]
    fn a_higher_or_equal_revision_is_applied_whatever_it_removes() {
        let held = view(100, 1..=4);
        assert_eq!(judge_snapshot(Some(&held), &view(101, [])), Ok(()));
        assert_eq!(judge_snapshot(Some(&held), &view(100, [])), Ok(()));
    }

    #[test]
    fn a_lower_revision_that_removes_few_ports_is_applied() {
        let held = view(100, 1..=4);
        assert_eq!(judge_snapshot(Some(&held), &view(90, [1, 2])), Ok(()), "half is not most");
        assert_eq!(judge_snapshot(Some(&held), &view(90, [1, 2, 3, 4, 5])), Ok(()), "nothing removed");
        // A host with no ports has nothing to lose.
        assert_eq!(judge_snapshot(Some(&view(100, [])), &view(1, [])), Ok(()));
    }

    #[test]
    fn the_first_snapshot_is_applied() {
        assert_eq!(judge_snapshot(None, &view(0, [])), Ok(()));
        assert_eq!(judge_snapshot(None, &view(5, 1..=3)), Ok(()));
    }
}
