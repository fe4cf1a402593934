//! The lab's `external` namespace as the upstream of the routers: routes
//! to project prefixes through a router's gateway address (what an
//! upstream router is configured with for IPv6, where nothing is NATed),
//! and echo servers whose logs tell which source address arrived.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv6Net};
use nix::sys::signal::Signal;

use crate::echo::{self, EchoPeer, EchoProtocol};
use crate::error::{Error, Result};
use crate::lab::Lab;
use crate::process::{self, Spec};

/// The external namespace's provider NIC.
const EXTERNAL_NIC: &str = "eth0";
/// Bound on an echo server becoming ready.
const ECHO_READY: Duration = Duration::from_secs(10);

impl Lab {
    /// Routes `destination` from the external namespace via `via` (a
    /// router's gateway address on the provider network), replacing any
    /// route to it: the external namespace then reaches, and answers, that
    /// router's project addresses.
    pub async fn route_external(&self, destination: IpNet, via: IpAddr) -> Result<()> {
        if destination.addr().is_ipv6() != via.is_ipv6() {
            return Err(Error::Invalid(format!("{destination} and {via} are not of one address family")));
        }
        let family = if via.is_ipv6() { "-6" } else { "-4" };
        let (dest, via) = (destination.trunc().to_string(), via.to_string());
        let argv = ["ip", family, "route", "replace", &dest, "via", &via, "dev", EXTERNAL_NIC];
        self.exec_ok("external", &argv).await.map(drop)
    }

    /// [`Lab::route_external`] for a project IPv6 prefix.
    pub async fn route_external_v6(&self, prefix: Ipv6Net, via: Ipv6Addr) -> Result<()> {
        self.route_external(IpNet::V6(prefix), IpAddr::V6(via)).await
    }

    /// Removes the external namespace's route to `destination`, if any.
    pub async fn unroute_external(&self, destination: IpNet) -> Result<()> {
        let family = if destination.addr().is_ipv6() { "-6" } else { "-4" };
        let dest = destination.trunc().to_string();
        let out = self.exec("external", &["ip", family, "route", "del", &dest]).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("No such process") {
            Ok(())
        } else {
            Err(Error::Command { command: format!("ip {family} route del {dest}"), detail: stderr.trim().into() })
        }
    }

    /// The external namespace's routes of `family` (`-4` or `-6`), as `ip route` prints them.
    pub async fn external_routes(&self, family: &str) -> Result<String> {
        self.exec_ok("external", &["ip", family, "route", "show"]).await
    }

    /// The router namespaces the agents have made (`<P>hN-qrouter-*`),
    /// sorted; `lab down` deletes them with the rest.
    pub fn router_namespaces(&self) -> Vec<String> {
        (1..=self.hosts())
            .flat_map(|i| crate::netns::list(&format!("{}qrouter-", self.topology().agent_netns_prefix(i))))
            .collect()
    }

    fn echo_name(&self, target: &str, port: u16) -> Result<String> {
        let ns = self.namespace(target)?;
        Ok(format!("echo-{}-{port}", ns.strip_prefix(self.prefix()).unwrap_or(&ns)))
    }

    fn echo_log(&self, name: &str) -> std::path::PathBuf {
        self.run_dir().join(format!("{name}.peers"))
    }

    /// Starts a TCP and UDP echo server on `port` (every address) in
    /// `target`'s namespace (usually `external`) and waits until it
    /// listens. It runs detached with a pid file, so [`Lab::down`], `lab
    /// down` and the stale-lab reaper stop it; [`Lab::echo_stop`] stops it
    /// before that.
    pub async fn echo_start(&self, target: &str, port: u16) -> Result<()> {
        let name = self.echo_name(target, port)?;
        if self.running(&name) {
            return Err(Error::Invalid(format!("an echo server already runs on {target} port {port}")));
        }
        let log = self.echo_log(&name);
        let _ = std::fs::remove_file(&log);
        let ns = self.namespace(target)?;
        let args = vec![
            "lab".into(),
            "echo-server".into(),
            "--port".into(),
            port.to_string(),
            "--log".into(),
            log.display().to_string(),
        ];
        let spec = Spec { name: &name, netns: &ns, program: &self.state.neutrino_bin, args, env: vec![], user: None };
        let child = process::spawn(self.run_dir(), &spec)?;
        self.children.lock().expect("children lock").insert(name.clone(), child);
        let deadline = Instant::now() + ECHO_READY;
        loop {
            if echo::log_says_listening(&std::fs::read_to_string(&log).unwrap_or_default()) {
                return Ok(());
            }
            if !self.running(&name) || Instant::now() > deadline {
                let what = format!("the echo server on {target} port {port} did not start");
                let tail = process::log_tail(&process::log_path(self.run_dir(), &name), 20);
                self.stop(&name, Signal::SIGKILL);
                return Err(Error::Process { what, log: tail });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the echo server on `target` `port`.
    pub fn echo_stop(&self, target: &str, port: u16) -> Result<()> {
        let name = self.echo_name(target, port)?;
        self.stop(&name, Signal::SIGTERM);
        Ok(())
    }

    /// Every peer the echo server on `target` `port` has seen, in order.
    pub fn echo_peers(&self, target: &str, port: u16) -> Result<Vec<EchoPeer>> {
        let log = self.echo_log(&self.echo_name(target, port)?);
        Ok(echo::parse_log(&std::fs::read_to_string(&log).unwrap_or_default()))
    }

    /// Sends `message` from `target`'s namespace (an instance, a router,
    /// `external`...) to the echo server at `to`, from source address
    /// `from` when given, and returns the reply.
    pub async fn echo_ask(
        &self,
        target: &str,
        protocol: EchoProtocol,
        to: SocketAddr,
        from: Option<IpAddr>,
        message: &str,
    ) -> Result<String> {
        let bin = self.state.neutrino_bin.display().to_string();
        let mut argv = vec![
            bin,
            "lab".into(),
            "echo-client".into(),
            "--protocol".into(),
            protocol.to_string(),
            "--to".into(),
            to.to_string(),
            "--message".into(),
            message.into(),
        ];
        if let Some(from) = from {
            argv.extend(["--from".into(), from.to_string()]);
        }
        self.exec_ok(target, &argv).await
    }
}
