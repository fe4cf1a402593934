//! The figures of one run and their markdown.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bench::Machine;

pub(super) const MD_BEGIN: &str = "<!-- neutrino-bench-control:begin -->";
pub(super) const MD_END: &str = "<!-- neutrino-bench-control:end -->";

/// Targets of the issue at the largest size.
const TARGET_P99: Duration = Duration::from_millis(50);
const TARGET_CPU_FACTOR: f64 = 2.0;
const TARGET_RSS_MIB: f64 = 200.0;

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
    pub all_peers: Latencies,
    pub api: Latencies,
    pub samples_wanted: usize,
    pub sample_wall: Duration,
    pub server_cpu: Option<Duration>,
    /// Watch bytes all agents received while sampling.
    pub watch_bytes: u64,
    /// Server CPU while nothing was written, as a share of one CPU.
    pub idle_cpu: Option<f64>,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
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
}

pub(super) struct Run {
    pub machine: Machine,
    pub command: String,
    pub hosts: usize,
    pub dhcp_hosts: usize,
    pub networks: usize,
    pub server: String,
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
    let _ =
        writeln!(s, "- server memory after: RSS **{:.0} MiB** (peak {:.0} MiB)", mib(r.rss_kib), mib(r.peak_rss_kib));
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

/// The issue's three targets, judged at the largest size measured.
fn verdicts(run: &Run) -> Vec<String> {
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
    let rss = mib(last.rss_kib);
    out.push(format!(
        "server RSS ≤ {TARGET_RSS_MIB:.0} MB {at}: **{}** ({rss:.0} MiB)",
        if rss > 0.0 && rss <= TARGET_RSS_MIB { "MET" } else { "NOT MET" }
    ));
    out
}

pub(super) fn markdown(run: &Run) -> String {
    let m = &run.machine;
    let mut s = String::new();
    let _ = writeln!(s, "{MD_BEGIN}");
    let _ = writeln!(s, "### Control-plane results of {}\n", m.date);
    let _ = writeln!(s, "Command:\n\n```sh\n{}\n```\n", run.command);
    let _ = writeln!(s, "| | |\n|---|---|");
    s.push_str(&m.markdown_rows());
    let _ = writeln!(s, "| server | {} |", run.server);
    let _ = writeln!(
        s,
        "| agents | {} simulated hosts in the benchmark process ({} of them also DHCP hosts), each registered, \
         watching and heartbeating over the agent channel |",
        run.hosts, run.dhcp_hosts
    );
    let _ = writeln!(s, "| cloud | {} VXLAN networks; ports bound to random hosts on random networks |", run.networks);
    if let Some(n) = &run.note {
        let _ = writeln!(s, "| note | {n} |");
    }
    let _ = writeln!(s, "| duration | {:.0} s |\n", run.total.as_secs_f64());
    let _ = writeln!(
        s,
        "| bound ports | samples | own host p50 / p99 ms | peer p50 / p99 ms | server CPU ms per create | RSS MiB | cold start ms |"
    );
    let _ = writeln!(s, "|--:|--:|--:|--:|--:|--:|--:|");
    for r in &run.sizes {
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} / {} | {} | {:.0} | {} |",
            r.size,
            r.samples(),
            ms(r.own.pct(50.0)),
            ms(r.own.pct(99.0)),
            ms(r.peer.pct(50.0)),
            ms(r.peer.pct(99.0)),
            ms(r.cpu_per_create()),
            mib(r.rss_kib),
            ms(r.cold.as_ref().map(|c| c.elapsed))
        );
    }
    let _ = writeln!(s, "\nTargets (issue 8):\n");
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
         periodic refresh in that time."
    );
    let _ = writeln!(s, "{MD_END}");
    s
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
            let mut r = SizeResult { size: 50_000, rss_kib: 100 * 1024, ..Default::default() };
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
