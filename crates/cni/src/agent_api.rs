//! The plugin's requests to the host agent and its replies: one JSON
//! object each way, a line each, over the agent's unix socket. The plugin
//! opens a connection per invocation; the agent answers ADD only once the
//! port is wired, so the container has connectivity when it starts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{AddResult, CniError, ErrorCode, PortMapping, ValidAttachment};

/// An attachment: a container's interface on one network (the same key
/// the agent gives the server).
pub use neutrino_proto::containers::AttachmentKey;

/// What the plugin asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create the port (bound to this host, `device_owner` a container,
    /// `device_id` the container id, `dns_name` its name), plug the veth
    /// into `netns` as `ifname` with the port's MAC, addresses, routes and
    /// MTU, publish `port_mappings`; answer once wired.
    Add {
        key: AttachmentKey,
        netns: String,
        network: String,
        project: String,
        security_groups: Vec<String>,
        /// The container's name, when the runtime passes one (`CNI_ARGS`
        /// `K8S_POD_NAME`, podman's container name).
        dns_name: Option<String>,
        port_mappings: Vec<PortMapping>,
        floating_ip: Option<std::net::IpAddr>,
        external_network: Option<String>,
    },
    /// Remove the port and the veth; success when either is gone already.
    Del { key: AttachmentKey, netns: Option<String> },
    /// Whether the port exists and the interface in `netns` has its
    /// addresses and routes.
    Check { key: AttachmentKey, netns: String },
    /// Remove the ports of this CNI network's attachments not in `valid`.
    Gc { cni_network: String, valid: Vec<ValidAttachment> },
    /// Whether the agent can serve ADD now (connected to its server).
    Status,
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Reply {
    Added { result: AddResult },
    Done,
    Failed { code: u32, msg: String, details: String },
}

impl Reply {
    pub fn failed(e: &CniError) -> Reply {
        Reply::Failed { code: e.code as u32, msg: e.msg.clone(), details: e.details.clone() }
    }
}

/// How the plugin reaches the agent (a trait, so that the plugin's logic
/// is tested without one).
pub trait AgentLink {
    fn ask(&mut self, request: &Request) -> Result<Reply, CniError>;
}

/// The agent's unix socket.
pub struct SocketLink {
    pub path: std::path::PathBuf,
    /// How long an answer may take (an ADD waits for the port to be wired).
    pub timeout: Duration,
}

impl SocketLink {
    pub fn new(path: impl AsRef<Path>) -> SocketLink {
        SocketLink { path: path.as_ref().to_path_buf(), timeout: Duration::from_secs(60) }
    }
}

impl AgentLink for SocketLink {
    /// Connecting fails at once when no agent listens (no socket, or
    /// nobody behind it): ADD fails fast, with "try again later".
    fn ask(&mut self, request: &Request) -> Result<Reply, CniError> {
        let unreachable = |e: std::io::Error| {
            CniError::new(
                ErrorCode::TryAgainLater,
                "the neutrino agent is not reachable",
                format!("{}: {e} (is `neutrino agent` running on this host?)", self.path.display()),
            )
        };
        let mut stream = UnixStream::connect(&self.path).map_err(unreachable)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(unreachable)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(unreachable)?;
        let mut line =
            serde_json::to_vec(request).map_err(|e| CniError::new(ErrorCode::Io, "request", e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(unreachable)?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).map_err(|e| {
            CniError::new(ErrorCode::Io, "no answer from the neutrino agent", format!("{}: {e}", self.path.display()))
        })?;
        serde_json::from_str(&answer).map_err(|e| {
            CniError::new(ErrorCode::Decode, "the neutrino agent's answer cannot be read", format!("{e}: {answer:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_tagged_json() {
        let key = AttachmentKey { container_id: "c0ffee".into(), ifname: "eth0".into(), cni_network: "web".into() };
        let req = Request::Del { key, netns: None };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.starts_with(r#"{"op":"del","key":{"container_id":"c0ffee""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        let reply = Reply::failed(&CniError::new(ErrorCode::Refused, "no such network", "net9"));
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(text, r#"{"outcome":"failed","code":100,"msg":"no such network","details":"net9"}"#);
    }

    #[test]
    fn no_agent_is_a_fast_try_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut link = SocketLink::new(dir.path().join("agent.sock"));
        let started = std::time::Instant::now();
        let e = link.ask(&Request::Status).unwrap_err();
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        assert!(e.details.contains("agent.sock"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn one_line_each_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let agent = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(req, Request::Status);
            (&stream).write_all(b"{\"outcome\":\"done\"}\n").unwrap();
        });
        assert_eq!(SocketLink::new(&path).ask(&Request::Status).unwrap(), Reply::Done);
        agent.join().unwrap();
    }
}
