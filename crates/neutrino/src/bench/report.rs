//! The results as text for the terminal and as a markdown section for
//! BENCHMARKS.md, with the verdicts on the issue's targets.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::BenchError;
use super::machine::{Machine, SERVER_PID};
use super::phase::Phase;

/// Target of the issue: sequential creates per second.
const TARGET_CREATES_PER_SEC: f64 = 1000.0;
/// Target of the issue: p99 of the full list with 10,000 ports.
const TARGET_LIST_P99: Duration = Duration::from_millis(50);
/// Markers around the generated section of a markdown file.
const MD_BEGIN: &str = "<!-- neutrino-bench:begin -->";
const MD_END: &str = "<!-- neutrino-bench:end -->";
/// Markers around the section of runs on PostgreSQL (`--database-url`).
const MD_PG_BEGIN: &str = "<!-- neutrino-bench-postgres:begin -->";
const MD_PG_END: &str = "<!-- neutrino-bench-postgres:end -->";
/// Targets of issue 12: concurrent creates with the most servers against
/// one server, and the sequential creates' p99.
const TARGET_SCALE_OUT: f64 = 2.0;
const TARGET_SEQUENTIAL_P99: Duration = Duration::from_millis(10);

/// Everything a report shows.
pub(super) struct Report {
    pub(super) machine: Machine,
    pub(super) target: String,
    /// `SQLite`, `PostgreSQL, 2 servers`: the run in a comparison.
    pub(super) label: String,
    pub(super) servers: usize,
    pub(super) postgres: bool,
    /// `pg_database_size` after the run.
    pub(super) database_bytes: Option<u64>,
    pub(super) command: String,
    pub(super) note: Option<String>,
    pub(super) args_ports: usize,
    pub(super) setup: Duration,
    pub(super) phases: Vec<Phase>,
    pub(super) total: Duration,
    pub(super) messages: Vec<String>,
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m >= 100.0 {
        format!("{m:.0}")
    } else if m >= 10.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn find<'a>(r: &'a Report, prefix: &str) -> Option<&'a Phase> {
    r.phases.iter().find(|p| p.name.starts_with(prefix))
}

/// The verdicts on the two targets of the issue.
fn verdicts(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    match find(r, "create: sequential") {
        Some(p) if p.count > 0 => {
            let met = p.rate() >= TARGET_CREATES_PER_SEC;
            out.push(format!(
                "sequential port creates >= {TARGET_CREATES_PER_SEC:.0}/s: {} ({:.0}/s)",
                if met { "MET" } else { "NOT MET" },
                p.rate()
            ));
        }
        _ => out.push("sequential port creates: not measured".into()),
    }
    match find(r, "list: full") {
        Some(p) if p.count > 0 => {
            let items = p.items.unwrap_or(0);
            let met = p.pct(99.0) < TARGET_LIST_P99 && items >= 10_000;
            let caveat = if items < 10_000 {
                format!(" (only {items} ports listed, target needs 10,000)")
            } else {
                String::new()
            };
            out.push(format!(
                "list p99 < {} ms with 10,000 ports: {} (p99 {} ms over {items} ports){caveat}",
                TARGET_LIST_P99.as_millis(),
                if met { "MET" } else { "NOT MET" },
                ms(p.pct(99.0))
            ));
        }
        _ => out.push("list p99: not measured".into()),
    }
    out
}

/// What the CPU column measures in this run.
fn cpu_meaning() -> String {
    match SERVER_PID.get() {
        Some(pid) => format!("CPU time of the server process (pid {pid}) per request."),
        None => "CPU time of the benchmark process per request (server and client together when the server \
                 runs in-process)."
            .into(),
    }
}

/// A phase's latency and CPU columns in ms: p50, p90, p99, max, mean, CPU
/// per request.
fn ms_columns(p: &Phase) -> [String; 6] {
    [p.pct(50.0), p.pct(90.0), p.pct(99.0), p.max(), p.mean(), p.cpu_per_request()].map(ms)
}

/// What a phase's row says besides its numbers: a list's size, a fill's
/// rate (qualified by `fill_note`), and whether it was cut short or failed.
fn phase_details(p: &Phase, fill_note: &str) -> Vec<String> {
    let mut details = Vec::new();
    if let (Some(b), Some(i)) = (p.bytes, p.items) {
        details.push(format!("{i} ports, {} per response", size(b)));
    } else if let Some(i) = p.items {
        details.push(format!("{i} ports created, {:.0} ports/s{fill_note}", i as f64 / p.wall.as_secs_f64().max(1e-9)));
    }
    if p.cut_short {
        details.push("cut short".to_string());
    }
    if p.errors > 0 {
        details.push(format!("{} errors, first: {}", p.errors, p.first_error.as_deref().unwrap_or("?")));
    }
    details
}

pub(super) fn text_report(r: &Report) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "\nneutrino bench, {}", m.date);
    let _ = writeln!(s, "  command : {}", r.command);
    let _ = writeln!(s, "  commit  : {} ({} build)", m.commit, m.build);
    let _ = writeln!(s, "  machine : {} CPUs, {}, {:.1} GiB RAM, Linux {}", m.nproc, m.cpu, m.memory_gib, m.kernel);
    let _ = writeln!(s, "  load avg: {} before, {} after", m.load_before, m.load_after);
    let _ = writeln!(s, "  target  : {}", r.target);
    if let Some(n) = &r.note {
        let _ = writeln!(s, "  note    : {n}");
    }
    let _ = writeln!(s, "  setup {:.2} s, total {:.1} s\n", r.setup.as_secs_f64(), r.total.as_secs_f64());
    let with_db = has_database_cpu(r);
    let _ = writeln!(
        s,
        "  {:<32} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6}{}",
        "phase",
        "n",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "cpu ms/rq",
        "busy",
        if with_db { "  db cpu ms/rq" } else { "" }
    );
    for p in &r.phases {
        let [p50, p90, p99, max, mean, cpu] = ms_columns(p);
        let db = match p.database_cpu_per_request() {
            Some(d) if with_db => format!(" {:>14}", ms(d)),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  {:<32} {:>6} {:>9.1} {p50:>8} {p90:>8} {p99:>8} {max:>8} {mean:>8} {cpu:>9} {:>5.0}%{db}",
            p.name,
            p.count,
            p.rate(),
            p.machine_busy * 100.0
        );
        let extra = phase_details(p, "");
        if !extra.is_empty() {
            let _ = writeln!(s, "  {:<32} {}", "", extra.join("; "));
        }
    }
    let _ = writeln!(s, "\n  cpu ms/rq: {}", cpu_meaning());
    if with_db {
        let _ = writeln!(s, "  db cpu ms/rq: CPU time of the PostgreSQL cluster's processes per request");
    }
    let _ = writeln!(s, "  busy: share of the whole machine's CPU in use during the phase (all processes)\n");
    if let Some(b) = r.database_bytes {
        let _ = writeln!(s, "  database size after the run: {}\n", size(b as usize));
    }
    for v in verdicts(r) {
        let _ = writeln!(s, "  target: {v}");
    }
    for msg in &r.messages {
        let _ = writeln!(s, "  warning: {msg}");
    }
    s
}

pub(super) fn markdown_report(r: &Report) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "{MD_BEGIN}");
    let _ = writeln!(s, "### Results of {}\n", m.date);
    let _ = writeln!(s, "Command:\n\n```sh\n{}\n```\n", r.command);
    let _ = writeln!(s, "| | |\n|---|---|");
    s.push_str(&m.markdown_rows());
    let _ = writeln!(s, "| server | {} |", r.target);
    if let Some(n) = &r.note {
        let _ = writeln!(s, "| note | {n} |");
    }
    let _ = writeln!(
        s,
        "| duration | setup {:.2} s, whole run {:.1} s; {} ports wanted on the large network |\n",
        r.setup.as_secs_f64(),
        r.total.as_secs_f64(),
        r.args_ports
    );
    phase_table(&mut s, r);
    let _ = writeln!(s, "Targets:\n");
    for v in verdicts(r) {
        let _ = writeln!(s, "- {v}");
    }
    for msg in &r.messages {
        let _ = writeln!(s, "- warning: {msg}");
    }
    let _ = writeln!(s, "{MD_END}");
    s
}

fn has_database_cpu(r: &Report) -> bool {
    r.phases.iter().any(|p| p.database_cpu_per_request().is_some())
}

/// A run's phases as a markdown table, with the column notes after it.
fn phase_table(s: &mut String, r: &Report) {
    let with_db = has_database_cpu(r);
    let (db_head, db_rule) = if with_db { (" DB CPU ms/req |", "--:|") } else { ("", "") };
    let _ = writeln!(
        s,
        "| phase | n | req/s | p50 ms | p90 ms | p99 ms | max ms | mean ms | CPU ms/req |{db_head} machine busy | notes |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|{db_rule}--:|---|");
    for p in &r.phases {
        let [p50, p90, p99, max, mean, cpu] = ms_columns(p);
        // An error text may hold a `|`, which would end the cell.
        let notes = phase_details(p, " (untimed fill, not a target)").join("; ").replace('|', "\\|");
        let db = if with_db {
            format!(" {} |", p.database_cpu_per_request().map(ms).unwrap_or_default())
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {p50} | {p90} | {p99} | {max} | {mean} | {cpu} |{db} {:.0}% | {notes} |",
            p.name,
            p.count,
            p.rate(),
            p.machine_busy * 100.0,
        );
    }
    let db_note =
        if with_db { " DB CPU ms/req: CPU time of the PostgreSQL cluster's processes per request." } else { "" };
    let _ = writeln!(
        s,
        "\nCPU ms/req: {}{db_note} Machine busy: share of all CPUs in use during the phase, by any process.\n",
        cpu_meaning()
    );
}

/// Replaces the bench section of `path` (or appends one, or creates the file).
pub(super) fn write_markdown(path: &Path, section: &str) -> Result<(), BenchError> {
    write_section(path, MD_BEGIN, MD_END, section)
}

/// Replaces the PostgreSQL section of `path` (or appends one).
pub(super) fn write_postgres_markdown(path: &Path, section: &str) -> Result<(), BenchError> {
    write_section(path, MD_PG_BEGIN, MD_PG_END, section)
}

/// One row of the side-by-side table: the run, its creates and its list.
struct Row {
    label: String,
    seq: Option<[String; 3]>,
    conc: Option<[String; 3]>,
    list: Option<[String; 2]>,
    db_cpu: String,
    db_size: String,
    busy: String,
}

fn row(r: &Report) -> Row {
    let rate_p50_p99 = |p: &Phase| [format!("{:.0}", p.rate()), ms(p.pct(50.0)), ms(p.pct(99.0))];
    let seq = find(r, "create: sequential").filter(|p| p.count > 0);
    let conc = find(r, "create: concurrent").filter(|p| p.count > 0);
    let list = find(r, "list: full").filter(|p| p.count > 0);
    let db = |p: Option<&Phase>| p.and_then(Phase::database_cpu_per_request).map(ms).unwrap_or_else(|| "–".into());
    let busy = |p: Option<&Phase>| p.map(|p| format!("{:.0}%", p.machine_busy * 100.0)).unwrap_or_else(|| "–".into());
    Row {
        label: r.label.clone(),
        seq: seq.map(rate_p50_p99),
        conc: conc.map(rate_p50_p99),
        list: list.map(|p| [ms(p.pct(50.0)), ms(p.pct(99.0))]),
        db_cpu: format!("{} / {}", db(seq), db(conc)),
        db_size: r.database_bytes.map(|b| size(b as usize)).unwrap_or_else(|| "–".into()),
        busy: format!("{} / {}", busy(seq), busy(conc)),
    }
}

/// The issue 12 verdicts over the runs: concurrent creates with the most
/// servers against one, and each PostgreSQL run's sequential p99.
fn scale_verdicts(runs: &[Report]) -> Vec<String> {
    let mut out = Vec::new();
    let conc = |r: &Report| find(r, "create: concurrent").filter(|p| p.count > 0).map(Phase::rate);
    let pg: Vec<&Report> = runs.iter().filter(|r| r.postgres).collect();
    let one = pg.iter().find(|r| r.servers == 1).and_then(|r| conc(r));
    let most = pg.iter().filter(|r| r.servers > 1).max_by_key(|r| r.servers);
    match (one, most.and_then(|r| conc(r).map(|c| (r.servers, c)))) {
        (Some(a), Some((n, b))) => {
            let ratio = b / a.max(1e-9);
            out.push(format!(
                "concurrent creates, {n} servers >= {TARGET_SCALE_OUT:.0}x one server: {} ({b:.0}/s vs {a:.0}/s, {ratio:.2}x)",
                if ratio >= TARGET_SCALE_OUT { "MET" } else { "NOT MET" }
            ));
        }
        _ => out.push("concurrent creates with several servers against one: not measured (give --servers 1,3)".into()),
    }
    for r in runs {
        if let Some(p) = find(r, "create: sequential").filter(|p| p.count > 0) {
            let p99 = p.pct(99.0);
            out.push(format!(
                "sequential create p99 <= {} ms, {}: {} (p99 {} ms, p50 {} ms)",
                TARGET_SEQUENTIAL_P99.as_millis(),
                r.label,
                if p99 <= TARGET_SEQUENTIAL_P99 { "MET" } else { "NOT MET" },
                ms(p99),
                ms(p.pct(50.0))
            ));
        }
    }
    out
}

/// The runs side by side, for the terminal.
pub(super) fn text_comparison(runs: &[Report]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nside by side (same parameters, one after the other):\n");
    let _ = writeln!(
        s,
        "  {:<24} {:>20} {:>20} {:>16} {:>13} {:>11} {:>10}",
        "run", "seq/s p50 p99 ms", "conc/s p50 p99 ms", "list p50 p99 ms", "db ms/create", "busy", "db size"
    );
    for r in runs {
        let x = row(r);
        let three = |v: &Option<[String; 3]>| v.as_ref().map(|v| v.join(" ")).unwrap_or_else(|| "–".into());
        let list = x.list.as_ref().map(|v| v.join(" ")).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "  {:<24} {:>20} {:>20} {:>16} {:>13} {:>11} {:>10}",
            x.label,
            three(&x.seq),
            three(&x.conc),
            list,
            x.db_cpu,
            x.busy,
            x.db_size
        );
    }
    let _ = writeln!(s);
    for v in scale_verdicts(runs) {
        let _ = writeln!(s, "  target: {v}");
    }
    s
}

/// The PostgreSQL section: the runs side by side, the issue 12 verdicts,
/// then each run's phases.
pub(super) fn markdown_postgres(
    runs: &[Report],
    cluster: &super::pg::Cluster,
    command: &str,
    total: Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{MD_PG_BEGIN}");
    let Some(first) = runs.first() else {
        let _ = writeln!(s, "Nothing was measured.\n{MD_PG_END}");
        return s;
    };
    // The first run's machine, with the load after the last run.
    let last_load = runs.last().map(|r| r.machine.load_after.clone()).unwrap_or_default();
    let machine = Machine { load_after: last_load, ..first.machine.clone() };
    let _ = writeln!(s, "### Results of {} (PostgreSQL and several servers)\n", machine.date);
    let _ = writeln!(s, "Command:\n\n```sh\n{command}\n```\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    s.push_str(&machine.markdown_rows());
    let _ = writeln!(s, "| database | {} |", cluster.describe());
    if let Some(n) = &first.note {
        let _ = writeln!(s, "| note | {n} |");
    }
    let _ = writeln!(
        s,
        "| duration | {:.0} s for {} runs, one after the other; {} ports wanted on the large network |\n",
        total.as_secs_f64(),
        runs.len(),
        first.args_ports
    );
    let _ = writeln!(
        s,
        "| run | sequential creates/s | p50 / p99 ms | concurrent creates/s | p50 / p99 ms | list of {} ports p50 / p99 ms | \
         DB CPU ms per create (seq / conc) | machine busy (seq / conc) | database after |",
        first.args_ports
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in runs {
        let x = row(r);
        let rate = |v: &Option<[String; 3]>| v.as_ref().map(|v| v[0].clone()).unwrap_or_else(|| "–".into());
        let lat =
            |v: &Option<[String; 3]>| v.as_ref().map(|v| format!("{} / {}", v[1], v[2])).unwrap_or_else(|| "–".into());
        let list = x.list.as_ref().map(|v| format!("{} / {}", v[0], v[1])).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {list} | {} | {} | {} |",
            x.label,
            rate(&x.seq),
            lat(&x.seq),
            rate(&x.conc),
            lat(&x.conc),
            x.db_cpu,
            x.busy,
            x.db_size
        );
    }
    let _ = writeln!(s, "\nTargets (issue 12):\n");
    for v in scale_verdicts(runs) {
        let _ = writeln!(s, "- {v}");
    }
    let _ = writeln!(s);
    for r in runs {
        let _ = writeln!(s, "#### {}\n", r.label);
        let _ = writeln!(s, "- server: {}", r.target);
        let _ = writeln!(
            s,
            "- load average {} before, {} after; setup {:.2} s, run {:.1} s\n",
            r.machine.load_before,
            r.machine.load_after,
            r.setup.as_secs_f64(),
            r.total.as_secs_f64()
        );
        phase_table(&mut s, r);
        for v in verdicts(r) {
            let _ = writeln!(s, "- {v}");
        }
        for msg in &r.messages {
            let _ = writeln!(s, "- warning: {msg}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "{MD_PG_END}");
    s
}

/// Replaces the section between the markers `begin` and `end` of `path`
/// (or appends `section`, or creates the file with it).
pub(crate) fn write_section(path: &Path, begin: &str, end: &str, section: &str) -> Result<(), BenchError> {
    let existing = std::fs::read_to_string(path).ok();
    let text = match existing {
        Some(old) => match (old.find(begin), old.find(end)) {
            (Some(b), Some(e)) if b < e => {
                let after = &old[e + end.len()..];
                let after = after.strip_prefix('\n').unwrap_or(after);
                format!("{}{section}{after}", &old[..b])
            }
            _ => format!("{}\n\n{section}", old.trim_end()),
        },
        None => format!("# Benchmarks\n\n{section}"),
    };
    std::fs::write(path, text)
        .map_err(|source| BenchError::Io { what: format!("cannot write {}", path.display()), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_section_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("neutrino-bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("B.md");
        std::fs::write(&file, format!("# T\n\nintro\n\n{MD_BEGIN}\nold\n{MD_END}\n\n## Analysis\n")).unwrap();
        write_markdown(&file, &format!("{MD_BEGIN}\nnew\n{MD_END}\n")).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("# T\n\nintro\n\n{MD_BEGIN}\nnew\n{MD_END}\n\n## Analysis\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
