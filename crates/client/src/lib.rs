//! One client of Neutrino's HTTP APIs, for the lab, the benches, the tests,
//! and the tools that come next (CNI plugin, CLI).
//!
//! - [`Client`]: the Neutron v2.0 API and the Keystone v3 subset, with
//!   [`Auth`] (password credentials, a fixed token, or none). A password
//!   client issues a project-scoped token on first use and issues a new one
//!   once when the server answers 401 (the token expired, or the server
//!   restarted with a new database).
//! - [`Collection`]: create, bulk create, show, list, update and delete of
//!   one Neutron resource, keyed by the model's typed id ([`PortId`] selects
//!   `/v2.0/ports`). Resources are JSON [`Value`]s: callers (mostly tests)
//!   look at fields the server renders, and a typed mirror of every
//!   resource would only lag behind the API.
//! - [`Error`]: every failure, with the HTTP status and the Neutron or
//!   Keystone error body decoded ([`ErrorBody`]).
//! - [`AgentClient`]: the agent channel (`neutrino_proto`), its watch stream
//!   decoded from newline-delimited JSON, to one server or a list of them
//!   (each address of a name too): requests stay on the server that
//!   answers and move to the next one when it fails (`servers`).
//!
//! [`PortId`]: neutrino_model::PortId
//! [`Value`]: serde_json::Value

mod agent;
mod error;
mod identity;
mod neutron;
mod resources;
mod servers;

pub use agent::{AgentClient, AgentError, WatchStream};
pub use error::{Error, ErrorBody, KeystoneError, NeutronError, Result};
pub use identity::{IssuedToken, NewUser};
pub use neutron::{Auth, Client, Credentials, RawResponse, Response};
pub use resources::{Collection, ResourceId, id_of};

/// The body type of [`Client::request_raw`].
pub use bytes::Bytes;
pub use reqwest::header::HeaderMap;
pub use reqwest::{Method, StatusCode};
