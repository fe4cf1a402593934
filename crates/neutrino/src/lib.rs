//! The `neutrino` binary's library: configuration and process glue, shared
//! with the integration tests and the benchmark.

pub mod agent_channel;
pub mod bench;
pub mod bench_containers;
pub mod bench_control;
pub mod bench_dataplane;
pub mod bench_firewall;
pub mod bench_routers;
pub mod config;
pub mod data_dir;
pub mod server;
