//! What can go wrong while building, using or tearing down a lab.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the lab needs root: it creates network namespaces and veth pairs")]
    NotRoot,
    /// A bad prefix, host, target or instance name.
    #[error("{0}")]
    Invalid(String),
    #[error("lab '{0}' already exists (namespaces or run directory); run `neutrino lab down --prefix {0}` first")]
    Exists(String),
    #[error("no lab '{prefix}': {detail}")]
    NotFound { prefix: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A command the lab ran (mostly `ip`) failed.
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    /// A process the lab started ended, or never became ready.
    #[error("{what}\n{log}")]
    Process { what: String, log: String },
    /// The API could not be reached, or answered something unexpected.
    #[error("API: {0}")]
    Client(#[from] neutrino_client::Error),
    /// The API answered, but not what the lab needs, or its client thread
    /// is gone.
    #[error("API: {0}")]
    Api(String),
    #[error("DHCP in instance '{name}' failed: {detail}")]
    Dhcp { name: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    pub(crate) fn io_at(action: &str, path: &Path, source: std::io::Error) -> Self {
        Error::Io { what: format!("{action} {}", path.display()), source }
    }
}
