//! Search over the real corpus and generated logfmt events, checked against counts the test
//! computes itself with the documented tokenization rule.

use std::time::{Duration, Instant};

use crate::harness::{Collector, corpus_dir, wait_for};

/// DESIGN.md's rule, written independently of the product: split on every
/// non-alphanumeric character, lowercase.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn contains_phrase(haystack: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && haystack.windows(phrase.len()).any(|w| w == phrase)
}

/// One line sent, with what the test knows about it.
struct SentLine {
    msg: String,
    line: String,
    level: Option<String>,
    task: Option<String>,
    latency_ms: Option<u64>,
}

struct Sent {
    lines: Vec<SentLine>,
}

fn load(c: &Collector) -> Sent {
    let mut sent = Sent { lines: Vec::new() };
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "log"));
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("corpus file");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for (n, chunk) in lines.chunks(500).enumerate() {
            let body = chunk.join("\n");
            let key = format!("{}-{n}", path.display());
            assert_eq!(c.ingest(body.as_bytes(), Some(&key)).0, 200);
            for l in chunk {
                let l = l.strip_suffix('\r').unwrap_or(l);
                sent.lines.push(SentLine {
                    msg: l.to_string(),
                    line: l.to_string(),
                    level: None,
                    task: None,
                    latency_ms: None,
                });
            }
        }
    }
    let levels = ["info", "warn", "error", "debug"];
    let tasks = ["charge", "parse_email", "send_receipt"];
    let mut body = String::new();
    for i in 0..2000u64 {
        let level = levels[(i % 4) as usize];
        let task = tasks[(i % 3) as usize];
        let latency = i * 7 % 1000;
        let msg = if i % 5 == 0 {
            "Charge failed: card declined"
        } else {
            "charge ok"
        };
        let line = format!(
            "ts=2026-11-30T03:21:03.{i:09}Z level={level} msg=\"{msg}\" task={task} task_id=dl-bar-{i:03} latency_ms={latency}"
        );
        body.push_str(&line);
        body.push('\n');
        sent.lines.push(SentLine {
            msg: msg.to_string(),
            line,
            level: Some(level.into()),
            task: Some(task.into()),
            latency_ms: Some(latency),
        });
    }
    assert_eq!(c.ingest(body.as_bytes(), Some("generated")).0, 200);
    sent
}

#[test]
fn counts_match_an_independent_count() {
    let c = Collector::start();
    let sent = load(&c);
    c.wait_indexed(sent.lines.len() as u64);
    assert_eq!(
        c.count(""),
        sent.lines.len() as u64,
        "total documents equal lines sent"
    );

    let term = |t: &str| {
        let want = tokens(t);
        sent.lines
            .iter()
            .filter(|l| {
                contains_phrase(&tokens(&l.msg), &want) || contains_phrase(&tokens(&l.line), &want)
            })
            .count() as u64
    };
    for q in [
        "failed",
        "Failed",
        "password",
        "error",
        "blk",
        "declined",
        "root",
        "connection",
    ] {
        assert_eq!(c.count(q), term(q), "term {q}");
    }
    for p in [
        "Failed password",
        "authentication failure",
        "card declined",
        "Invalid user",
    ] {
        assert_eq!(c.count(&format!("\"{p}\"")), term(p), "phrase {p}");
    }
    let field = |f: &dyn Fn(&SentLine) -> bool| sent.lines.iter().filter(|l| f(l)).count() as u64;
    assert_eq!(
        c.count("level:error"),
        field(&|l| l.level.as_deref() == Some("error"))
    );
    assert_eq!(
        c.count("level:>=warn"),
        field(&|l| matches!(l.level.as_deref(), Some("warn" | "error")))
    );
    assert_eq!(
        c.count("task:charge"),
        field(&|l| l.task.as_deref() == Some("charge"))
    );
    assert_eq!(
        c.count("task:charge level:error"),
        field(&|l| l.task.as_deref() == Some("charge") && l.level.as_deref() == Some("error"))
    );
    assert_eq!(
        c.count("latency_ms:>500"),
        field(&|l| l.latency_ms.is_some_and(|v| v > 500))
    );
    assert_eq!(
        c.count("latency_ms:[100 TO 200]"),
        field(&|l| l.latency_ms.is_some_and(|v| (100..=200).contains(&v)))
    );
    assert_eq!(c.count("task_id:dl-bar-001"), 1);
    assert_eq!(c.count("task_id:dl-bar-01*"), 10);
    assert_eq!(c.count("_exists_:latency_ms"), 2000);
    assert_eq!(
        c.count("-level:info task:charge"),
        field(&|l| l.task.as_deref() == Some("charge") && l.level.as_deref() != Some("info"))
    );
    assert_eq!(
        c.count("(task:charge OR task:parse_email) declined"),
        field(
            &|l| matches!(l.task.as_deref(), Some("charge" | "parse_email"))
                && l.msg.contains("declined")
        )
    );

    let (status, body) = c.get(
        "/api/v1/search",
        &[("q", "level:error | count by task"), ("limit", "0")],
    );
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().expect("rows");
    let total: u64 = rows.iter().map(|r| r[1].as_u64().unwrap_or(0)).sum();
    assert_eq!(total, c.count("level:error"));
    assert_eq!(body["columns"], serde_json::json!(["task", "count"]));

    let (status, body) = c.get("/api/v1/search", &[("q", "task:charge"), ("limit", "3")]);
    assert_eq!(status, 200);
    let hits = body["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 3);
    assert!(
        hits[0]["ts"].as_str() >= hits[1]["ts"].as_str(),
        "newest first"
    );
    assert!(
        hits[0]["seq"].is_string() && hits[0]["ingest_ts"].is_string(),
        "{}",
        hits[0]
    );
    assert_eq!(hits[0]["task"], "charge");

    let (status, body) = c.get("/api/v1/search", &[("q", "level:error AND (")]);
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().is_some() && body["position"].is_u64(),
        "{body}"
    );
    let (code, _, err) = c.cli(&["search", "level:error AND ("]);
    assert_ne!(code, 0);
    assert!(
        err.contains('^'),
        "the CLI draws a caret under the position:\n{err}"
    );

    let (code, out, err) = c.cli(&["search", "task_id:dl-bar-007"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ts=2026-11-30T03:21:03.000000007Z level=debug msg=\"charge ok\" task=parse_email task_id=dl-bar-007"), "{out}");

    // The collector's own records of these searches are there, but only when asked for.
    assert!(c.count("kind:audit action:search") > 0);
}

#[test]
fn a_line_is_searchable_within_a_second_or_so() {
    let c = Collector::start();
    let started = Instant::now();
    assert_eq!(
        c.ingest(
            b"level=info msg=\"fresh line\" marker=fresh-1\n",
            Some("fresh")
        )
        .0,
        200
    );
    wait_for("the fresh line", Duration::from_secs(10), || {
        (c.count("marker:fresh-1") == 1).then_some(())
    });
    eprintln!("searchable after {:?}", started.elapsed());
}

#[test]
fn index_survives_kill9_and_reindex_gives_the_same_counts() {
    let mut c = Collector::start();
    let sent = load(&c);
    c.kill9();
    c.restart();
    c.wait_caught_up();
    let n = sent.lines.len() as u64;
    assert_eq!(c.count(""), n);
    let errors = c.count("level:error");
    c.stop();
    let (code, _, err) = crate::harness::run_cli(
        &[
            "collector",
            "reindex",
            "--data-dir",
            &c.data_dir().to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    c.restart();
    c.wait_caught_up();
    assert_eq!(c.count(""), n);
    assert_eq!(c.count("level:error"), errors);
}

#[test]
fn tail_streams_new_matching_lines_and_context_shows_the_task_run() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let c = Collector::start();
    assert_eq!(
        c.ingest(
            b"level=info marker=tail-x msg=\"before the tail\"\n",
            Some("t0")
        )
        .0,
        200
    );
    c.wait_indexed(1);
    let mut tail = Command::new(crate::harness::spoor_bin())
        .args(["tail", "marker:tail-x"])
        .env("SPOOR_COLLECTOR", c.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spoor tail");
    let stdout = tail.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The tail is connected once a line sent now reaches it; keep sending until one does.
    let mut n = 0;
    let first = wait_for("a tailed line", Duration::from_secs(20), || {
        n += 1;
        let line = format!(
            "level=warn marker=tail-x msg=\"live {n}\"\nlevel=warn marker=other msg=\"not me\"\n"
        );
        c.ingest(line.as_bytes(), Some(&format!("t{n}")));
        rx.recv_timeout(Duration::from_millis(500)).ok()
    });
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        first.contains("marker=tail-x") && first.contains("msg=\"live "),
        "{first}"
    );
    assert!(
        !first.contains("before the tail"),
        "tail starts at the moment it opens: {first}"
    );

    let run: String = (1..=5)
        .map(|i| format!("level=info task=charge task_id=run-7 attempt={i} msg=\"step {i}\"\n"))
        .chain(std::iter::once(
            "level=info task=charge task_id=run-8 msg=\"other run\"\n".to_string(),
        ))
        .collect();
    assert_eq!(c.ingest(run.as_bytes(), Some("ctx")).0, 200);
    wait_for("the run indexed", Duration::from_secs(10), || {
        (c.count("task_id:run-7") == 5).then_some(())
    });
    let (_, hit) = c.get("/api/v1/search", &[("q", "task_id:run-7 attempt:3")]);
    let seq = hit["hits"][0]["seq"].as_str().expect("seq").to_string();
    let (status, body) = c.get(
        "/api/v1/context",
        &[("seq", &seq), ("before", "1"), ("after", "5")],
    );
    assert_eq!(status, 200, "{body}");
    let msgs: Vec<&str> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["msg"].as_str())
        .collect();
    assert_eq!(msgs, ["step 2", "step 3", "step 4", "step 5"]);
}
