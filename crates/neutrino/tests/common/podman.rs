//! A real container runtime in a lab host (../shared/lab/containers.md):
//! podman with its CNI backend and runc, started with `nsenter --net` into
//! the host's namespace, so the plugins it runs (ours, `neutrino-cni`)
//! and the containers it starts live on that host. Everything podman
//! keeps (storage, state, its CNI configs, the plugin directory) is in a
//! temporary directory of its own; nothing in /etc or /var/lib/containers.

use std::path::{Path, PathBuf};
use std::process::Output;

use neutrino_lab::Lab;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_neutrino");
/// The image every container runs: a static busybox, imported from a
/// tarball (no registry).
pub const IMAGE: &str = "localhost/neutrino-bb:1";

pub struct Podman {
    pub dir: tempfile::TempDir,
    /// The lab host's namespace.
    netns: String,
    /// The host's agent socket.
    pub socket: PathBuf,
}

impl Podman {
    /// A podman of its own on lab host `host` (1-based).
    pub async fn on(lab: &Lab, host: usize) -> Podman {
        Podman::in_netns(lab.topology().host(host), lab.cni_socket(host)).await
    }

    /// A podman of its own in namespace `netns`, whose agent serves CNI on
    /// `socket` (the controller of a lab with `controller_agent`).
    pub async fn in_netns(netns: String, socket: PathBuf) -> Podman {
        let dir = tempfile::Builder::new().prefix("neutrino-podman-").tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        // The plugin is the neutrino binary under the plugin's name.
        std::os::unix::fs::symlink(BIN, bin.join("neutrino-cni")).unwrap();
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{bin}\"]\nnetwork_config_dir = \"{nets}\"\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            bin = bin.display(),
            nets = dir.path().join("net.d").display()
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        let podman = Podman { netns, socket, dir };
        podman.import_image().await;
        podman
    }

    async fn import_image(&self) {
        let root = self.dir.path().join("image");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in
            ["sh", "ip", "ping", "sleep", "nc", "hostname", "cat", "nslookup", "wget", "httpd", "echo", "mkdir"]
        {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.path().join("image.tar");
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "image tarball");
        let out = self.podman(&["import", tar.to_str().unwrap(), IMAGE]).await;
        assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CNI network `name` of the Neutrino network `network` of project
    /// `project`; `extra` keys are added to the plugin's config.
    pub fn network(&self, name: &str, network: &str, project: &str, extra: Value) {
        let mut plugin = json!({"type": "neutrino-cni", "network": network, "project": project,
            "agent_socket": self.socket, "capabilities": {"portMappings": true}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            plugin[k] = v.clone();
        }
        let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
        std::fs::write(self.dir.path().join("net.d").join(format!("{name}.conflist")), conf.to_string()).unwrap();
    }

    /// podman in the host's namespace, on this podman's directory.
    fn command(&self) -> std::process::Command {
        let d = self.dir.path();
        let path = |p: &str| d.join(p).display().to_string();
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .args([
                "--",
                "podman",
                "--runtime",
                "/usr/sbin/runc",
                "--network-backend",
                "cni",
                "--storage-driver",
                "vfs",
            ])
            .args(["--root", &path("storage"), "--runroot", &path("run"), "--tmpdir", &path("tmp")])
            .args(["--cni-config-dir", &path("net.d")])
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs podman with `args` in the host's namespace.
    pub async fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.args(args).kill_on_drop(true).output().await.expect("podman runs")
    }

    /// `podman run -d` of a container that sleeps, on `networks`, with
    /// `extra` options; returns its id.
    pub async fn start(&self, name: &str, networks: &[&str], extra: &[&str]) -> Result<String, String> {
        self.run(name, networks, extra, &["sleep", "3600"]).await
    }

    /// `podman run -d` of `command` on `networks`; returns the id.
    pub async fn run(&self, name: &str, networks: &[&str], extra: &[&str], command: &[&str]) -> Result<String, String> {
        let nets = networks.join(",");
        let mut args =
            vec!["run", "-d", "--name", name, "--hostname", name, "--network", &nets, "--cap-add", "NET_RAW"];
        args.extend(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]);
        args.extend(extra);
        args.push(IMAGE);
        args.extend(command);
        let out = self.podman(&args).await;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `podman exec NAME ARGV...`.
    pub async fn exec(&self, name: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend(argv);
        self.podman(&args).await
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Podman {
    /// Every container goes (their namespaces with them), so that nothing
    /// of the test stays in the lab host: drop a `Podman` before its lab.
    fn drop(&mut self) {
        if !std::path::Path::new("/run/netns").join(&self.netns).exists() {
            eprintln!("podman of {}: the lab host went first; its containers may be left running", self.netns);
        }
        let _ = self
            .command()
            .args(["rm", "-a", "-f", "-t", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
