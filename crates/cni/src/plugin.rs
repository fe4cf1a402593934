//! `neutrino-cni`: one invocation, from the environment and stdin to what
//! goes to stdout and the exit code.

use serde_json::Value;

use crate::agent_api::{AgentLink, AttachmentKey, Reply, Request, SocketLink};
use crate::spec::{CniError, Command, ErrorCode, Invocation, NetConf, Version, version_result};

/// What an invocation prints, and whether it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: Option<Value>,
    pub success: bool,
}

impl Outcome {
    fn ok(stdout: Option<Value>) -> Outcome {
        Outcome { stdout, success: true }
    }

    fn error(e: &CniError, version: Version) -> Outcome {
        Outcome { stdout: Some(e.to_json(version)), success: false }
    }
}

/// Runs one invocation; `link` builds the way to the agent from the
/// socket path the config names.
pub fn run<L: AgentLink>(env: impl Fn(&str) -> Option<String>, stdin: &[u8], link: impl FnOnce(&str) -> L) -> Outcome {
    // Errors are written in the version the input asked for when it names
    // one the plugin speaks.
    let answer_in = NetConf::version_of(stdin).unwrap_or(Version::LATEST);
    let inv = match Invocation::from_env(env) {
        Ok(inv) => inv,
        Err(e) => return Outcome::error(&e, answer_in),
    };
    if inv.command == Command::Version {
        // VERSION's input holds only `cniVersion` (and may be empty).
        return Outcome::ok(Some(version_result(answer_in)));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return Outcome::error(&e, answer_in),
    };
    if !conf.version.has(inv.command) {
        let e = CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI version",
            format!("{:?} does not exist in CNI {}", inv.command, conf.version),
        );
        return Outcome::error(&e, conf.version);
    }
    let mut agent = link(&conf.agent_socket);
    match execute(&inv, &conf, &mut agent) {
        Ok(stdout) => Outcome::ok(stdout),
        Err(e) => Outcome::error(&e, conf.version),
    }
}

fn execute(inv: &Invocation, conf: &NetConf, agent: &mut impl AgentLink) -> Result<Option<Value>, CniError> {
    let key = || AttachmentKey {
        container_id: inv.container_id().to_string(),
        ifname: inv.ifname().to_string(),
        cni_network: conf.name.clone(),
    };
    let request = match inv.command {
        Command::Add => Request::Add {
            key: key(),
            netns: inv.netns.clone().unwrap_or_default(),
            network: conf.network.clone(),
            project: conf.project.clone(),
            security_groups: conf.security_groups.clone(),
            dns_name: inv.args.get("K8S_POD_NAME").cloned(),
            port_mappings: conf.port_mappings.clone(),
            floating_ip: conf.floating_ip,
            external_network: conf.external_network.clone(),
        },
        Command::Del => Request::Del { key: key(), netns: inv.netns.clone() },
        Command::Check => Request::Check { key: key(), netns: inv.netns.clone().unwrap_or_default() },
        Command::Gc => Request::Gc { cni_network: conf.name.clone(), valid: conf.valid_attachments.clone() },
        Command::Status => Request::Status,
        Command::Version => unreachable!("answered before the config is read"),
    };
    let reply = match agent.ask(&request) {
        Ok(r) => r,
        // STATUS reports the agent's absence in its own codes.
        Err(e) if inv.command == Command::Status => {
            return Err(CniError::new(ErrorCode::NotAvailable, "the neutrino agent is not available", e.details));
        }
        Err(e) => return Err(e),
    };
    match (inv.command, reply) {
        (Command::Add, Reply::Added { result }) => Ok(Some(result.to_json(conf.version))),
        (_, Reply::Done) if inv.command != Command::Add => Ok(None),
        (_, Reply::Failed { code, msg, details }) => Err(CniError::new(ErrorCode::from_number(code), msg, details)),
        (command, other) => Err(CniError::new(
            ErrorCode::Decode,
            "the neutrino agent answered out of turn",
            format!("{command:?} answered with {other:?}"),
        )),
    }
}

/// The executable's entry point: reads stdin and the environment, asks the
/// agent over its socket, prints the outcome; the exit code.
pub fn main() -> i32 {
    use std::io::{Read, Write};
    let mut stdin = Vec::new();
    // VERSION may come with nothing on stdin; an unreadable stdin is the
    // config's problem, reported as such below.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = run(|k| std::env::var(k).ok(), &stdin, |path: &str| SocketLink::new(path));
    if let Some(v) = &outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, v);
        let _ = out.write_all(b"\n");
    }
    if outcome.success { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::spec::{AddResult, Dns, IpConfig};

    /// An agent that records what it was asked and answers `reply`.
    struct Fake {
        asked: Vec<Request>,
        reply: Result<Reply, CniError>,
    }

    impl AgentLink for &mut Fake {
        fn ask(&mut self, request: &Request) -> Result<Reply, CniError> {
            self.asked.push(request.clone());
            self.reply.clone()
        }
    }

    fn env(command: &str) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<&str, String> = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", "c0ffee".into()),
            ("CNI_NETNS", "/run/netns/c0ffee".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_ARGS", "K8S_POD_NAME=web1".into()),
        ]
        .into();
        move |k| map.get(k).cloned()
    }

    fn conf(version: &str) -> Vec<u8> {
        json!({"cniVersion": version, "name": "web", "type": "neutrino-cni", "network": "net1", "project": "demo",
               "agent_socket": "/tmp/none.sock"})
        .to_string()
        .into_bytes()
    }

    fn added() -> Reply {
        Reply::Added {
            result: AddResult {
                host_ifname: "tapc0ffee".into(),
                ifname: "eth0".into(),
                mac: "fa:16:3e:00:00:01".into(),
                mtu: 1450,
                sandbox: "/run/netns/c0ffee".into(),
                ips: vec![IpConfig {
                    address: "10.0.0.5/24".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                }],
                routes: vec![],
                dns: Dns::default(),
            },
        }
    }

    #[test]
    fn add_asks_the_agent_and_answers_in_the_requested_version() {
        for version in Version::ALL {
            let mut fake = Fake { asked: vec![], reply: Ok(added()) };
            let out = run(env("ADD"), &conf(version.as_str()), |path| {
                assert_eq!(path, "/tmp/none.sock");
                &mut fake
            });
            assert!(out.success, "{out:?}");
            let result = out.stdout.unwrap();
            assert_eq!(result["cniVersion"], version.as_str());
            assert_eq!(result["ips"][0]["address"], "10.0.0.5/24");
            let Request::Add { key, netns, network, project, dns_name, .. } = &fake.asked[0] else { panic!() };
            assert_eq!(
                (key.container_id.as_str(), key.ifname.as_str(), key.cni_network.as_str()),
                ("c0ffee", "eth0", "web")
            );
            assert_eq!((netns.as_str(), network.as_str(), project.as_str()), ("/run/netns/c0ffee", "net1", "demo"));
            assert_eq!(dns_name.as_deref(), Some("web1"));
        }
    }

    #[test]
    fn del_check_gc_and_status_print_nothing_on_success() {
        for (command, version) in [("DEL", "0.3.1"), ("CHECK", "0.4.0"), ("GC", "1.1.0"), ("STATUS", "1.1.0")] {
            let mut fake = Fake { asked: vec![], reply: Ok(Reply::Done) };
            let out = run(env(command), &conf(version), |_| &mut fake);
            assert_eq!(out, Outcome { stdout: None, success: true }, "{command}");
            assert_eq!(fake.asked.len(), 1);
        }
    }

    #[test]
    fn errors_carry_the_spec_codes() {
        // A command newer than the config's version.
        let mut fake = Fake { asked: vec![], reply: Ok(Reply::Done) };
        let out = run(env("CHECK"), &conf("0.3.1"), |_| &mut fake);
        assert_eq!((out.success, out.stdout.as_ref().unwrap()["code"].as_u64()), (false, Some(1)));
        assert!(fake.asked.is_empty(), "the agent is not asked");
        // The agent refuses (unknown network): its code and words.
        let refused = Reply::Failed { code: 100, msg: "no such network".into(), details: "net1".into() };
        let mut fake = Fake { asked: vec![], reply: Ok(refused) };
        let out = run(env("ADD"), &conf("1.0.0"), |_| &mut fake);
        let err = out.stdout.unwrap();
        assert_eq!(
            (err["code"].as_u64(), err["msg"].as_str(), err["cniVersion"].as_str()),
            (Some(100), Some("no such network"), Some("1.0.0"))
        );
        // No agent: ADD says try again later, STATUS "not available".
        let down = CniError::new(ErrorCode::TryAgainLater, "the neutrino agent is not reachable", "/tmp/none.sock");
        let mut fake = Fake { asked: vec![], reply: Err(down.clone()) };
        assert_eq!(run(env("ADD"), &conf("1.1.0"), |_| &mut fake).stdout.unwrap()["code"], 11);
        let mut fake = Fake { asked: vec![], reply: Err(down) };
        assert_eq!(run(env("STATUS"), &conf("1.1.0"), |_| &mut fake).stdout.unwrap()["code"], 50);
        // VERSION needs no agent and no config beyond its version.
        let mut fake = Fake { asked: vec![], reply: Ok(Reply::Done) };
        let out = run(env("VERSION"), br#"{"cniVersion": "0.4.0"}"#, |_| &mut fake);
        assert_eq!(out.stdout.unwrap()["cniVersion"], "0.4.0");
        // Bad JSON: 6.
        let mut fake = Fake { asked: vec![], reply: Ok(Reply::Done) };
        assert_eq!(run(env("DEL"), b"{", |_| &mut fake).stdout.unwrap()["code"], 6);
    }
}
