//! The agent's status file (`--status-file`): what the agent has done to
//! the kernel since it started, rewritten after every reconcile pass, so
//! that a test or an operator can tell whether an event (a server restart,
//! a reconnect) made the agent touch the kernel, without root tricks.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `{"revision":..,"kernel_ops":..,"netns_ops":..,"nft_ops":..,"fw_transactions":..,
/// "fw_element_ops":..,"fw_conntrack_ops":..,"reconciles":..,"wired":..}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Revision of the view the last pass reconciled.
    pub revision: u64,
    /// Kernel operations since start: netlink requests, namespace mounts,
    /// router NAT and firewall changes together.
    pub kernel_ops: u64,
    /// The namespace mounts and unmounts among them.
    pub netns_ops: u64,
    /// The router NAT changes among them (nft transactions, conntrack
    /// deletions, gratuitous ARPs).
    #[serde(default)]
    pub nft_ops: u64,
    /// Security-group firewall transactions (nft batches) among them.
    #[serde(default)]
    pub fw_transactions: u64,
    /// Remote-group set elements added or removed among them.
    #[serde(default)]
    pub fw_element_ops: u64,
    /// Conntrack deletions of removed rules among them.
    #[serde(default)]
    pub fw_conntrack_ops: u64,
    /// Reconcile passes since start.
    pub reconciles: u64,
    /// Ports wired after the last pass.
    pub wired: usize,
}

impl AgentStatus {
    /// Replaces the file at `path` in one step (a reader sees the old
    /// status or the new one, never half of one).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = temporary(path);
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    pub fn read(path: &Path) -> io::Result<AgentStatus> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// `.NAME.tmp` next to `path`: the same file system, so the rename is atomic.
fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_replaced_whole_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let first = AgentStatus {
            revision: 7,
            kernel_ops: 13,
            netns_ops: 1,
            nft_ops: 0,
            fw_transactions: 2,
            fw_element_ops: 3,
            fw_conntrack_ops: 4,
            reconciles: 2,
            wired: 1,
        };
        first.write(&path).unwrap();
        assert_eq!(AgentStatus::read(&path).unwrap(), first);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"revision": 7, "kernel_ops": 13, "netns_ops": 1, "nft_ops": 0, "fw_transactions": 2,
                "fw_element_ops": 3, "fw_conntrack_ops": 4, "reconciles": 2, "wired": 1})
        );
        let second = AgentStatus { reconciles: 3, ..first };
        second.write(&path).unwrap();
        assert_eq!(AgentStatus::read(&path).unwrap(), second);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["agent.json"], "no temporary file left behind");
    }

    #[test]
    fn a_status_file_in_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("agent.json");
        assert!(AgentStatus::default().write(&path).is_err());
        assert!(AgentStatus::read(&path).is_err());
    }
}
