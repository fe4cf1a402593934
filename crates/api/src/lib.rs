//! Neutrino's HTTP API: the Neutron v2.0 API under `/v2.0`, the built-in
//! Keystone v3 subset under `/v3`, and the version documents.
//!
//! The layer is thin: it parses and validates requests (spec §1.4), applies
//! policy (spec §3.10), calls the store, and renders Neutron's JSON.

pub mod agent_channel;
pub mod auth;
pub mod error;
pub mod identity;
pub mod neutron;
mod server;

pub use server::{ApiConfig, App, AuthMode, build_router, serve, serve_router};
