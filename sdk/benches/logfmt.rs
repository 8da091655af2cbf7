//! logfmt codec throughput on real logs: `cargo bench -p spoor-sdk --bench logfmt`.
//!
//! The lines of `../shared/corpus/loghub/*.log` are turned into events (timestamp, level,
//! task keys, the line as `msg`) and encoded; then the encoded lines are decoded by our
//! strict parser, by our lenient reader, by the same grammar written with `nom` (the other
//! candidate design), and by the `logfmt` 0.0.2 crate (the baseline). Criterion reports
//! each; a summary at the end prints MB/s and the ratios measured in this same run.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use spoor_sdk::event::Event;
use spoor_sdk::logfmt::{ReadOptions, parse_strict, read_line};

fn corpus_events() -> Vec<Event> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/loghub");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let levels = ["info", "info", "info", "warn", "error", "debug"];
    let mut events = Vec::new();
    for (f, path) in files.iter().enumerate() {
        let text = std::fs::read(path).expect("read corpus file");
        for (i, line) in text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let mut e = Event::new();
            e.push(
                "ts",
                format!(
                    "2026-11-30T03:21:{:02}.{:09}Z",
                    i % 60,
                    i * 7919 % 1_000_000_000
                ),
            );
            e.push("level", levels[i % levels.len()]);
            e.push("msg", String::from_utf8_lossy(line).into_owned());
            e.push("task", format!("task_{f}"));
            e.push("task_id", format!("01JD{i:022}"));
            e.push("attempt", "1");
            e.push("host", "ip-10-0-0-5");
            e.push("pid", "4242");
            e.push("latency_ms", (i * 37 % 900).to_string());
            events.push(e);
        }
    }
    events
}

/// The strict grammar written with nom 8, to compare designs on the same input. It
/// handles the same syntax but without the error positions of the hand-written scanner.
mod with_nom {
    use nom::branch::alt;
    use nom::bytes::complete::{escaped_transform, is_not, tag, take_while, take_while1};
    use nom::character::complete::{char, one_of};
    use nom::combinator::{map, opt, value};
    use nom::sequence::{delimited, preceded};
    use nom::{IResult, Parser};

    fn key(i: &str) -> IResult<&str, &str> {
        take_while1(|c: char| c > ' ' && c != '=' && c != '"')(i)
    }
    fn quoted(i: &str) -> IResult<&str, String> {
        delimited(
            char('"'),
            map(
                opt(escaped_transform(
                    is_not("\"\\"),
                    '\\',
                    alt((
                        value("\"", tag("\"")),
                        value("\\", tag("\\")),
                        value("\n", one_of("n")),
                        value("\r", one_of("r")),
                        value("\t", one_of("t")),
                    )),
                )),
                Option::unwrap_or_default,
            ),
            char('"'),
        )
        .parse(i)
    }
    fn bare(i: &str) -> IResult<&str, String> {
        map(
            take_while(|c: char| c > ' ' && c != '"' && c != '='),
            str::to_string,
        )
        .parse(i)
    }
    pub fn parse(mut i: &str) -> Option<Vec<(&str, Option<String>)>> {
        let mut out = Vec::new();
        loop {
            i = i.trim_start_matches([' ', '\t']);
            if i.is_empty() {
                return Some(out);
            }
            let (rest, k) = key(i).ok()?;
            let (rest, v) = opt(preceded(char('='), alt((quoted, bare))))
                .parse(rest)
                .ok()?;
            out.push((k, v));
            i = rest;
        }
    }
}

fn throughput_mb_s(bytes: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < Duration::from_millis(1500) {
        f();
        rounds += 1;
    }
    (bytes as f64 * f64::from(rounds)) / start.elapsed().as_secs_f64() / 1e6
}

fn bench_codec(c: &mut Criterion) {
    let events = corpus_events();
    let lines: Vec<String> = events.iter().map(Event::to_line).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let opts = ReadOptions::default();

    let mut group = c.benchmark_group("logfmt");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| black_box(e.to_line()).len())
                .sum::<usize>()
        })
    });
    group.bench_function("decode_strict", |b| {
        b.iter(|| {
            lines
                .iter()
                .map(|l| black_box(parse_strict(l.as_bytes())).map_or(0, |p| p.len()))
                .sum::<usize>()
        })
    });
    group.bench_function("decode_lenient", |b| {
        b.iter(|| {
            lines
                .iter()
                .map(|l| black_box(read_line(l.as_bytes(), &opts)).0.len())
                .sum::<usize>()
        })
    });
    group.bench_function("nom_strict", |b| {
        b.iter(|| {
            lines
                .iter()
                .map(|l| black_box(with_nom::parse(l)).map_or(0, |p| p.len()))
                .sum::<usize>()
        })
    });
    group.bench_function("logfmt_0_0_2", |b| {
        b.iter(|| {
            lines
                .iter()
                .map(|l| black_box(logfmt::parse(l)).len())
                .sum::<usize>()
        })
    });
    group.finish();

    let encode = throughput_mb_s(bytes, || {
        black_box(events.iter().map(|e| e.to_line().len()).sum::<usize>());
    });
    let strict = throughput_mb_s(bytes, || {
        black_box(
            lines
                .iter()
                .map(|l| parse_strict(l.as_bytes()).map_or(0, |p| p.len()))
                .sum::<usize>(),
        );
    });
    let lenient = throughput_mb_s(bytes, || {
        black_box(
            lines
                .iter()
                .map(|l| read_line(l.as_bytes(), &opts).0.len())
                .sum::<usize>(),
        );
    });
    let nom = throughput_mb_s(bytes, || {
        black_box(
            lines
                .iter()
                .map(|l| with_nom::parse(l).map_or(0, |p| p.len()))
                .sum::<usize>(),
        );
    });
    let baseline = throughput_mb_s(bytes, || {
        black_box(lines.iter().map(|l| logfmt::parse(l).len()).sum::<usize>());
    });
    println!(
        "\nlogfmt codec on {} corpus events ({:.1} MB), one core:",
        lines.len(),
        bytes as f64 / 1e6
    );
    println!("  encode          {encode:8.1} MB/s");
    println!(
        "  decode strict   {strict:8.1} MB/s  = {:.1}x logfmt 0.0.2, {:.1}x nom",
        strict / baseline,
        strict / nom
    );
    println!(
        "  decode lenient  {lenient:8.1} MB/s  = {:.1}x logfmt 0.0.2",
        lenient / baseline
    );
    println!("  nom strict      {nom:8.1} MB/s");
    println!("  logfmt 0.0.2    {baseline:8.1} MB/s  (baseline)");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_codec
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
