//! `neutrino bench`: system-level benchmarks over HTTP (placeholder until
//! the benchmark lands).

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> Result<(), String> {
    Err("not yet".into())
}
