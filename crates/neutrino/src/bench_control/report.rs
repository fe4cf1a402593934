//! The figures of one run and their markdown.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bench::Machine;

pub(super) const MD_BEGIN: &str = "<!-- neutrino-bench-control:begin -->";
pub(super) const MD_END: &str = "<!-- neutrino-bench-control:end -->";
/// Markers of the section of runs on PostgreSQL (`--database-url`).
pub(super) const MD_PG_BEGIN: &str = "<!-- neutrino-bench-control-postgres:begin -->";
pub(super) const MD_PG_END: &str = "<!-- neutrino-bench-control-postgres:end -->";

/// Targets of issue 8 at the largest size (one server on SQLite).
const TARGET_P99: Duration = Duration::from_millis(50);
const TARGET_CPU_FACTOR: f64 = 2.0;
const TARGET_RSS_MIB: f64 = 200.0;
/// Targets of issue 12 at the largest size (servers on PostgreSQL): every
/// propagation p99, and each server's RSS.
const TARGET_PG_P99: Duration = Duration::from_millis(100);
const TARGET_PG_RSS_MIB: f64 = 300.0;

/// Latencies of one kind over the samples of a size, and how many never
/// arrived within the sample timeout.
#[derive(Default)]
pub(super) struct Latencies {
    pub values: Vec<Duration>,
    pub timed_out: usize,
}

impl Latencies {
    pub(super) fn record(&mut self, value: Option<Duration>) {
        match value {
            Some(v) => self.values.push(v),
            None => self.timed_out += 1,
        }
    }

    /// Nearest-rank percentile; `None` without values.
    pub(super) fn pct(&self, q: f64) -> Option<Duration> {
        let mut v = self.values.clone();
        v.sort();
        let rank = ((q / 100.0) * v.len() as f64).ceil() as usize;
        v.get(rank.clamp(1, v.len().max(1)) - 1).copied()
    }
}

/// A new watch of one host until its snapshot is parsed.
pub(super) struct ColdStart {
    pub host: String,
    pub elapsed: Duration,
    pub ports: usize,
    pub networks: usize,
    pub endpoints: usize,
    pub json_bytes: usize,
}

/// Everything measured at one cloud size.
#[derive(Default)]
pub(super) struct SizeResult {
    pub size: usize,
    /// Bound ports the benchmark made (DHCP ports not counted).
    pub ports: usize,
    pub fill_ports: usize,
    pub fill: Duration,
    /// From the end of the fill until every host's view had its ports.
    pub settle: Option<Duration>,
    pub own: Latencies,
    pub peer: Latencies,
    /// With several servers: a peer watching server 1 (the write's), and
    /// one watching another server.
    pub peer_same: Latencies,
    pub peer_other: Latencies,
    pub all_peers: Latencies,
    pub api: Latencies,
    pub samples_wanted: usize,
    pub sample_wall: Duration,
    pub server_cpu: Option<Duration>,
    /// Watch bytes all agents received while sampling.
    pub watch_bytes: u64,
    /// Server CPU while nothing was written, as a share of one CPU.
    pub idle_cpu: Option<f64>,
    /// Per server, in order.
    pub rss_kib: Vec<u64>,
    pub peak_rss_kib: Vec<u64>,
    /// The PostgreSQL cluster's CPU time over the samples.
    pub db_cpu: Option<Duration>,
    /// `pg_database_size` after the samples, and before the first port
    /// (networks and subnets only).
    pub db_bytes: Option<u64>,
    pub db_base_bytes: Option<u64>,
    pub cold: Option<ColdStart>,
    pub load: String,
    pub notes: Vec<String>,
}

impl SizeResult {
    pub(super) fn samples(&self) -> usize {
        self.api.values.len()
    }

    pub(super) fn cpu_per_create(&self) -> Option<Duration> {
        let n = self.samples();
        self.server_cpu.filter(|_| n > 0).map(|c| c / n as u32)
    }

    pub(super) fn db_cpu_per_create(&self) -> Option<Duration> {
        let n = self.samples();
        self.db_cpu.filter(|_| n > 0).map(|c| c / n as u32)
    }

    /// The largest server's RSS, in MiB.
    fn max_rss_mib(&self) -> f64 {
        self.rss_kib.iter().copied().max().map(mib).unwrap_or(0.0)
    }

    /// The database's growth since before the first port, per bound port
    /// (DHCP ports, the feed and indexes included), in KiB.
    fn db_kib_per_port(&self) -> Option<f64> {
        let (now, base) = (self.db_bytes?, self.db_base_bytes?);
        Some(now.saturating_sub(base) as f64 / 1024.0 / self.ports.max(1) as f64)
    }
}

pub(super) struct Run {
    pub machine: Machine,
    pub command: String,
    pub hosts: usize,
    pub dhcp_hosts: usize,
    pub networks: usize,
    pub server: String,
    /// How many servers, on PostgreSQL or not, and whether the agents kept
    /// lean views.
    pub servers: usize,
    pub postgres: bool,
    pub lean: bool,
    pub note: Option<String>,
    pub sizes: Vec<SizeResult>,
    pub total: Duration,
    pub messages: Vec<String>,
}

fn ms(d: Option<Duration>) -> String {
    let Some(d) = d else { return "–".into() };
    let m = d.as_secs_f64() * 1000.0;
    if m >= 100.0 { format!("{m:.0}") } else { format!("{m:.1}") }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `77` or `140 / 138 / 141` (one per server), MiB.
fn rss_list(kib: &[u64]) -> String {
    if kib.is_empty() {
        return "–".into();
    }
    kib.iter().map(|k| format!("{:.0}", mib(*k))).collect::<Vec<_>>().join(" / ")
}

/// `p50 / p99` of some latencies.
fn p50_p99(l: &Latencies) -> String {
    format!("{} / {}", ms(l.pct(50.0)), ms(l.pct(99.0)))
}

fn latency_row(s: &mut String, what: &str, l: &Latencies) {
    let max = l.values.iter().max().copied();
    let _ = writeln!(
        s,
        "| {what} | {} | {} | {} | {} | {} |",
        l.values.len(),
        ms(l.pct(50.0)),
        ms(l.pct(99.0)),
        ms(max),
        l.timed_out
    );
}

fn size_section(s: &mut String, r: &SizeResult) {
    let _ = writeln!(s, "#### {} bound ports\n", r.size);
    let _ = writeln!(s, "| from the 201 of a port create until | n | p50 ms | p99 ms | max ms | timed out |");
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|");
    latency_row(s, "its own host's watch delivers it (`ports`)", &r.own);
    latency_row(s, "a peer host's watch delivers it (l2population)", &r.peer);
    if !r.peer_same.values.is_empty() || r.peer_same.timed_out > 0 {
        latency_row(s, "a peer watching server 1, the write's", &r.peer_same);
    }
    if !r.peer_other.values.is_empty() || r.peer_other.timed_out > 0 {
        latency_row(s, "a peer watching another server (through the database)", &r.peer_other);
    }
    latency_row(s, "every peer host's watch has it", &r.all_peers);
    latency_row(s, "*(the create itself: request → 201)*", &r.api);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- samples: {} of {} wanted, one create at a time, {:.1} s in all",
        r.samples(),
        r.samples_wanted,
        r.sample_wall.as_secs_f64()
    );
    let settle = match r.settle {
        Some(d) => format!("every view had its ports {:.1} s after the fill", d.as_secs_f64()),
        None => "the views had **not** settled when sampling began".into(),
    };
    let rate = r.fill_ports as f64 / r.fill.as_secs_f64().max(1e-9);
    let _ = writeln!(
        s,
        "- cloud: {} bound ports; fill of {} ports took {:.1} s ({rate:.0} ports/s); {settle}",
        r.ports,
        r.fill_ports,
        r.fill.as_secs_f64()
    );
    match (r.cpu_per_create(), r.server_cpu) {
        (Some(per), Some(total)) => {
            let _ = writeln!(
                s,
                "- server CPU per port create: **{} ms** ({:.2} s over {} creates until every watch had them, \
                 {:.0} % of one CPU in that time)",
                ms(Some(per)),
                total.as_secs_f64(),
                r.samples(),
                100.0 * total.as_secs_f64() / r.sample_wall.as_secs_f64().max(1e-9)
            );
        }
        _ => {
            let _ = writeln!(s, "- server CPU per port create: not measured");
        }
    }
    if let (Some(per), Some(total)) = (r.db_cpu_per_create(), r.db_cpu) {
        let _ = writeln!(
            s,
            "- PostgreSQL CPU per port create: **{} ms** ({:.2} s of the cluster's processes over the same time)",
            ms(Some(per)),
            total.as_secs_f64()
        );
    }
    if r.samples() > 0 {
        let _ = writeln!(
            s,
            "- watch stream bytes to all agents per port create: {:.1} KiB",
            r.watch_bytes as f64 / 1024.0 / r.samples() as f64
        );
    }
    if let Some(idle) = r.idle_cpu {
        let _ = writeln!(s, "- server CPU with no writes, just before: {:.0} % of one CPU", idle * 100.0);
    }
    let servers = if r.rss_kib.len() > 1 { " (servers 1, 2, ...)" } else { "" };
    let _ = writeln!(
        s,
        "- server memory after{servers}: RSS **{} MiB** (peak {} MiB)",
        rss_list(&r.rss_kib),
        rss_list(&r.peak_rss_kib)
    );
    if let Some(bytes) = r.db_bytes {
        let per_port = match (r.db_kib_per_port(), r.db_base_bytes) {
            (Some(k), Some(base)) => format!(
                ": **{k:.2} KiB per bound port** over the {:.1} MiB it had before the first port",
                base as f64 / (1 << 20) as f64
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "- database size after (`pg_database_size`): {:.1} MiB{per_port}",
            bytes as f64 / (1 << 20) as f64
        );
    }
    match &r.cold {
        Some(c) => {
            let _ = writeln!(
                s,
                "- cold start: a new watch of {} without `since` until its snapshot is parsed: **{} ms** \
                 ({} ports, {} networks, {} l2population endpoints, {:.2} MiB as JSON)",
                c.host,
                ms(Some(c.elapsed)),
                c.ports,
                c.networks,
                c.endpoints,
                c.json_bytes as f64 / (1 << 20) as f64
            );
        }
        None => {
            let _ = writeln!(s, "- cold start: not measured");
        }
    }
    let _ = writeln!(s, "- load average after this size: {}", r.load);
    for n in &r.notes {
        let _ = writeln!(s, "- **note**: {n}");
    }
    let _ = writeln!(s);
}

/// Issue 12's targets at the largest size: every propagation p99 within
/// 100 ms, each server's RSS within 300 MB.
fn postgres_verdicts(run: &Run) -> Vec<String> {
    let Some(last) = run.sizes.last() else {
        return vec!["nothing was measured".into()];
    };
    let at = format!("at {} ports", last.size);
    let kinds = [&last.own, &last.peer, &last.peer_other];
    let worst = kinds.iter().filter_map(|l| l.pct(99.0)).max();
    let timed_out: usize = kinds.iter().map(|l| l.timed_out).sum();
    let met = worst.is_some_and(|w| w <= TARGET_PG_P99) && timed_out == 0 && last.samples() > 0;
    let other = if run.servers > 1 {
        format!(", peer on another server p99 {} ms", ms(last.peer_other.pct(99.0)))
    } else {
        String::new()
    };
    let rss = last.max_rss_mib();
    vec![
        format!(
            "propagation p99 ≤ {} ms {at}: **{}** (own host p99 {} ms, peer p99 {} ms{other}, {timed_out} timed out)",
            TARGET_PG_P99.as_millis(),
            if met { "MET" } else { "NOT MET" },
            ms(last.own.pct(99.0)),
            ms(last.peer.pct(99.0)),
        ),
        format!(
            "each server's RSS ≤ {TARGET_PG_RSS_MIB:.0} MB {at}: **{}** ({} MiB)",
            if rss > 0.0 && rss <= TARGET_PG_RSS_MIB { "MET" } else { "NOT MET" },
            rss_list(&last.rss_kib)
        ),
    ]
}

/// The issue's three targets, judged at the largest size measured.
fn verdicts(run: &Run) -> Vec<String> {
    if run.postgres {
        return postgres_verdicts(run);
    }
    let (Some(first), Some(last)) = (run.sizes.first(), run.sizes.last()) else {
        return vec!["nothing was measured".into()];
    };
    let mut out = Vec::new();
    let at = format!("at {} ports", last.size);
    let worst = [last.own.pct(99.0), last.peer.pct(99.0)].into_iter().flatten().max();
    let incomplete = last.own.timed_out + last.peer.timed_out > 0 || last.samples() == 0;
    let met = worst.is_some_and(|w| w <= TARGET_P99) && !incomplete;
    out.push(format!(
        "propagation p99 ≤ {} ms {at}: **{}** (own host p99 {} ms, peer p99 {} ms, {} timed out)",
        TARGET_P99.as_millis(),
        if met { "MET" } else { "NOT MET" },
        ms(last.own.pct(99.0)),
        ms(last.peer.pct(99.0)),
        last.own.timed_out + last.peer.timed_out
    ));
    match (first.cpu_per_create(), last.cpu_per_create()) {
        (Some(a), Some(b)) if run.sizes.len() > 1 => {
            let factor = b.as_secs_f64() / a.as_secs_f64().max(1e-9);
            out.push(format!(
                "CPU per create {at} within {TARGET_CPU_FACTOR}× of {} ports: **{}** ({} ms vs {} ms, {factor:.1}×)",
                first.size,
                if factor <= TARGET_CPU_FACTOR { "MET" } else { "NOT MET" },
                ms(Some(b)),
                ms(Some(a))
            ));
        }
        _ => out.push("CPU per create: not measured at two sizes".into()),
    }
    let rss = last.max_rss_mib();
    out.push(format!(
        "server RSS ≤ {TARGET_RSS_MIB:.0} MB {at}: **{}** ({rss:.0} MiB)",
        if rss > 0.0 && rss <= TARGET_RSS_MIB { "MET" } else { "NOT MET" }
    ));
    out
}

pub(super) fn markdown(run: &Run) -> String {
    let m = &run.machine;
    let mut s = String::new();
    let (begin, end) = if run.postgres { (MD_PG_BEGIN, MD_PG_END) } else { (MD_BEGIN, MD_END) };
    let _ = writeln!(s, "{begin}");
    let title = if run.postgres { " on PostgreSQL" } else { "" };
    let _ = writeln!(s, "### Control-plane results{title} of {}\n", m.date);
    let _ = writeln!(s, "Command:\n\n```sh\n{}\n```\n", run.command);
    let _ = writeln!(s, "| | |\n|---|---|");
    s.push_str(&m.markdown_rows());
    let _ = writeln!(s, "| server | {} |", run.server);
    let spread = if run.servers > 1 {
        format!("; host i registered with and watching server i mod {}", run.servers)
    } else {
        String::new()
    };
    let lean = if run.lean {
        "; lean views: each agent keeps only its own sections and drops other hosts' ports after parsing each event"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "| agents | {} simulated hosts in the benchmark process ({} of them also DHCP hosts), each registered, \
         watching and heartbeating over the agent channel{spread}{lean} |",
        run.hosts, run.dhcp_hosts
    );
    let _ = writeln!(s, "| cloud | {} VXLAN networks; ports bound to random hosts on random networks |", run.networks);
    if let Some(n) = &run.note {
        let _ = writeln!(s, "| note | {n} |");
    }
    let _ = writeln!(s, "| duration | {:.0} s |\n", run.total.as_secs_f64());
    if run.postgres {
        summary_postgres(&mut s, run);
    } else {
        let _ = writeln!(
            s,
            "| bound ports | samples | own host p50 / p99 ms | peer p50 / p99 ms | server CPU ms per create | RSS MiB | cold start ms |"
        );
        let _ = writeln!(s, "|--:|--:|--:|--:|--:|--:|--:|");
        for r in &run.sizes {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.size,
                r.samples(),
                p50_p99(&r.own),
                p50_p99(&r.peer),
                ms(r.cpu_per_create()),
                rss_list(&r.rss_kib),
                ms(r.cold.as_ref().map(|c| c.elapsed))
            );
        }
    }
    let _ = writeln!(s, "\nTargets (issue {}):\n", if run.postgres { 12 } else { 8 });
    for v in verdicts(run) {
        let _ = writeln!(s, "- {v}");
    }
    for msg in &run.messages {
        let _ = writeln!(s, "- warning: {msg}");
    }
    let _ = writeln!(s);
    for r in &run.sizes {
        size_section(&mut s, r);
    }
    let _ = writeln!(
        s,
        "Delivery is stamped when the agent has read and parsed the event, as an agent would. Server CPU per \
         create is the server process's CPU time from before the first sampled create until every watch had the \
         last one, divided by the creates: it includes the view work, the heartbeats of all agents and any \
         periodic refresh in that time.{}",
        if run.servers > 1 { " With several servers it is their CPU time together." } else { "" }
    );
    let _ = writeln!(s, "{end}");
    s
}

/// The summary table of a run on PostgreSQL: the delivery across servers,
/// the cluster's CPU, each server's memory and the database's size.
fn summary_postgres(s: &mut String, run: &Run) {
    let several = run.servers > 1;
    let _ = writeln!(
        s,
        "| bound ports | samples | own host p50 / p99 ms | peer p50 / p99 ms |{} servers' CPU ms per create | \
         PostgreSQL CPU ms per create | RSS MiB per server | database MiB | database growth KiB per port | cold start ms |",
        if several { " peer on another server p50 / p99 ms |" } else { "" }
    );
    let _ = writeln!(s, "|--:|--:|--:|--:|{}--:|--:|--:|--:|--:|--:|", if several { "--:|" } else { "" });
    for r in &run.sizes {
        let other = if several { format!(" {} |", p50_p99(&r.peer_other)) } else { String::new() };
        let db_mib = r.db_bytes.map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64)).unwrap_or_else(|| "–".into());
        let db_per_port = r.db_kib_per_port().map(|k| format!("{k:.2}")).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |{other} {} | {} | {} | {db_mib} | {db_per_port} | {} |",
            r.size,
            r.samples(),
            p50_p99(&r.own),
            p50_p99(&r.peer),
            ms(r.cpu_per_create()),
            ms(r.db_cpu_per_create()),
            rss_list(&r.rss_kib),
            ms(r.cold.as_ref().map(|c| c.elapsed))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank_and_count_timeouts_apart() {
        let mut l = Latencies::default();
        assert_eq!(l.pct(50.0), None);
        for i in (1..=100).rev() {
            l.record(Some(Duration::from_millis(i)));
        }
        l.record(None);
        assert_eq!(l.pct(50.0), Some(Duration::from_millis(50)));
        assert_eq!(l.pct(99.0), Some(Duration::from_millis(99)));
        assert_eq!(l.timed_out, 1);
    }

    #[test]
    fn a_timed_out_sample_fails_the_propagation_target() {
        let fast = |timed_out| {
            let mut r = SizeResult { size: 50_000, rss_kib: vec![100 * 1024], ..Default::default() };
            r.own.record(Some(Duration::from_millis(5)));
            r.peer.record(Some(Duration::from_millis(5)));
            r.api.record(Some(Duration::from_millis(1)));
            if timed_out {
                r.peer.record(None);
            }
            r
        };
        let run = |r| Run {
            machine: Machine::probe(),
            command: String::new(),
            hosts: 1,
            dhcp_hosts: 0,
            networks: 1,
            server: String::new(),
            servers: 1,
            postgres: false,
            lean: false,
            note: None,
            sizes: vec![r],
            total: Duration::ZERO,
            messages: vec![],
        };
        let ok = verdicts(&run(fast(false)));
        assert!(ok[0].contains("**MET**") && ok[2].contains("**MET**"), "{ok:?}");
        let late = verdicts(&run(fast(true)));
        assert!(late[0].contains("NOT MET"), "{late:?}");
    }
}
