//! Evaluation: measure each rule against the index, move each alert through
//! inactive → pending → firing → resolved, and say what to notify. [`step`] is the pure
//! state machine (times are injected, in Unix milliseconds), [`measure`] asks the index.

use std::collections::BTreeMap;
use std::time::Duration;

use spoor_sdk::event::keys;
use time::OffsetDateTime;

use super::notify::Status;
use super::rule::{RuleConfig, RuleKind};
use super::source::CountSource;
use super::state::{AlertState, Phase};
use crate::search::{SearchError, SearchRequest};

/// The `group_by` values of one alert.
pub type Group = BTreeMap<String, String>;

/// What one evaluation of one alert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// The phase it moved from, when it changed.
    pub changed_from: Option<Phase>,
    /// What to tell the notifiers.
    pub notify: Option<Status>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Moves `a` on by one evaluation at `now`: `breach` says whether the rule's condition
/// holds; `silenced` whether a silence covers the alert (a silenced alert changes state
/// but is not notified; once the silence ends, a still-firing alert is notified).
pub fn step(
    rule: &RuleConfig,
    a: &mut AlertState,
    breach: bool,
    value: f64,
    now: i64,
    silenced: bool,
) -> Step {
    let before = a.phase;
    a.value = value;
    if breach {
        a.last_breach = Some(now);
    }
    let mut notify = None;
    match (a.phase, breach) {
        (Phase::Inactive | Phase::Resolved, true) => {
            a.active_since = Some(now);
            a.fired_at = None;
            a.resolved_at = None;
            a.notified_at = None;
            a.phase = Phase::Pending;
        }
        (Phase::Pending, false) => {
            a.phase = Phase::Inactive;
            a.active_since = None;
        }
        (Phase::Firing, false) => {
            let since_breach = now - a.last_breach.unwrap_or(now);
            if since_breach >= ms(rule.keep_firing_for) {
                a.phase = Phase::Resolved;
                a.resolved_at = Some(now);
                a.active_since = None;
                if rule.send_resolved && a.notified_at.is_some() && !silenced {
                    notify = Some(Status::Resolved);
                }
                a.notified_at = None;
            }
        }
        _ => {}
    }
    if a.phase == Phase::Pending {
        let since = a.active_since.unwrap_or(now);
        if now - since >= ms(rule.for_) {
            a.phase = Phase::Firing;
            a.fired_at = Some(now);
        }
    }
    if a.phase == Phase::Firing && !silenced {
        let due = match (a.notified_at, rule.repeat_interval) {
            (None, _) => true,
            (Some(t), Some(repeat)) => now - t >= ms(repeat),
            (Some(_), None) => false,
        };
        if due {
            a.notified_at = Some(now);
            notify = Some(Status::Firing);
        }
    }
    Step {
        changed_from: (a.phase != before).then_some(before),
        notify,
    }
}

/// RFC 3339 text of a Unix-milliseconds time.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(spoor_sdk::timestamp::format_timestamp)
        .unwrap_or_default()
}

/// The query a rule counts: its own, minus the collector's alert records.
pub fn counted_query(q: &str) -> String {
    if q.trim().is_empty() {
        "-kind:alert".to_string()
    } else {
        format!("({q}) -kind:alert")
    }
}

/// A field filter for one group value.
pub fn group_filter(group: &Group) -> String {
    let mut out = String::new();
    for (k, v) in group {
        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(" {k}:\"{escaped}\""));
    }
    out
}

/// Matches of `q` in `[from, to)` per group (one entry under the empty group when
/// `group_by` is empty).
pub fn count(
    source: &CountSource,
    q: &str,
    from: i64,
    to: i64,
    group_by: &[String],
) -> Result<BTreeMap<Group, f64>, SearchError> {
    let mut req = SearchRequest {
        q: counted_query(q),
        from: Some(rfc3339(from)),
        to: Some(rfc3339(to)),
        limit: Some(0),
        ..SearchRequest::default()
    };
    if group_by.is_empty() {
        let resp = source.search(&req)?;
        return Ok(BTreeMap::from([(Group::new(), resp.total as f64)]));
    }
    req.q = format!("{} | count by {}", req.q, group_by.join(","));
    let resp = source.search(&req)?;
    let mut out = BTreeMap::new();
    for row in resp.rows.unwrap_or_default() {
        if row.len() != group_by.len() + 1 {
            continue;
        }
        let mut group = Group::new();
        for (f, v) in group_by.iter().zip(&row) {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            group.insert(f.clone(), text);
        }
        let n = row[group_by.len()].as_f64().unwrap_or(0.0);
        out.insert(group, n);
    }
    Ok(out)
}

/// The rule's measured value per group at `now`.
pub fn measure(
    source: &CountSource,
    rule: &RuleConfig,
    now: i64,
) -> Result<BTreeMap<Group, f64>, SearchError> {
    let w = ms(rule.window);
    let from = now.saturating_sub(w);
    let current = count(source, &rule.query, from, now, &rule.group_by)?;
    Ok(match rule.kind {
        RuleKind::Threshold | RuleKind::Absence => current,
        RuleKind::Ratio => {
            let of = rule.of.as_deref().unwrap_or_default();
            let denominators = count(source, of, from, now, &rule.group_by)?;
            let mut out = BTreeMap::new();
            for (g, d) in denominators {
                let n = current.get(&g).copied().unwrap_or(0.0);
                out.insert(g, if d > 0.0 { n / d } else { 0.0 });
            }
            for (g, n) in current {
                out.entry(g)
                    .or_insert(if n > 0.0 { f64::INFINITY } else { 0.0 });
            }
            out
        }
        RuleKind::Spike => {
            let previous = count(
                source,
                &rule.query,
                from.saturating_sub(w),
                from,
                &rule.group_by,
            )?;
            let mut out = BTreeMap::new();
            for (g, p) in &previous {
                let c = current.get(g).copied().unwrap_or(0.0);
                out.insert(g.clone(), rule.direction.factor(c, *p));
            }
            for (g, c) in current {
                out.entry(g).or_insert(rule.direction.factor(c, 0.0));
            }
            out
        }
    })
}

/// Up to 5 matching lines of a group, newest first, as logfmt.
pub fn samples(source: &CountSource, rule: &RuleConfig, group: &Group, now: i64) -> Vec<String> {
    let req = SearchRequest {
        q: format!("{}{}", counted_query(&rule.query), group_filter(group)),
        from: Some(rfc3339(now.saturating_sub(ms(rule.window)))),
        to: Some(rfc3339(now.saturating_add(1))),
        limit: Some(5),
        ..SearchRequest::default()
    };
    let Ok(resp) = source.search(&req) else {
        return Vec::new();
    };
    resp.hits
        .into_iter()
        .map(|hit| {
            let mut line = String::new();
            let skip = [keys::SEQ, keys::INGEST_TS, keys::AGENT];
            let ordered = spoor_sdk::event::RESERVED_ORDER
                .iter()
                .filter_map(|k| hit.get_key_value(*k))
                .chain(
                    hit.iter()
                        .filter(|(k, _)| !spoor_sdk::event::RESERVED_ORDER.contains(&k.as_str())),
                );
            for (k, v) in ordered {
                if skip.contains(&k.as_str()) {
                    continue;
                }
                let text = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                spoor_sdk::logfmt::write_pair(&mut line, k, &text);
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> RuleConfig {
        toml::from_str(&format!(
            "name = \"r\"\nkind = \"threshold\"\nquery = \"level:error\"\nwindow = \"1m\"\nvalue = 2\n{text}"
        ))
        .expect("rule parses")
    }

    /// Runs one evaluation per (time, value) and returns the notifications.
    fn run(rule: &RuleConfig, a: &mut AlertState, evals: &[(i64, f64)]) -> Vec<(i64, Status)> {
        evals
            .iter()
            .filter_map(|&(t, v)| {
                step(rule, a, rule.breaches(v), v, t, false)
                    .notify
                    .map(|s| (t, s))
            })
            .collect()
    }

    #[test]
    fn fires_once_then_resolves() {
        let r = rule("");
        let mut a = AlertState::default();
        let out = run(
            &r,
            &mut a,
            &[
                (0, 1.0),
                (1000, 5.0),
                (2000, 6.0),
                (3000, 7.0),
                (4000, 0.0),
                (5000, 0.0),
            ],
        );
        assert_eq!(out, [(1000, Status::Firing), (4000, Status::Resolved)]);
        assert_eq!(a.phase, Phase::Resolved);
    }

    #[test]
    fn pending_for_the_for_period() {
        let r = rule("for = \"2s\"");
        let mut a = AlertState::default();
        let s = step(&r, &mut a, true, 5.0, 0, false);
        assert_eq!(
            (a.phase, s.changed_from),
            (Phase::Pending, Some(Phase::Inactive))
        );
        assert_eq!(step(&r, &mut a, true, 5.0, 1000, false).notify, None);
        let s = step(&r, &mut a, true, 5.0, 2000, false);
        assert_eq!((a.phase, s.notify), (Phase::Firing, Some(Status::Firing)));
        // A blip below the threshold while pending goes back to inactive, silently.
        let mut b = AlertState::default();
        step(&r, &mut b, true, 5.0, 0, false);
        let s = step(&r, &mut b, false, 0.0, 1000, false);
        assert_eq!((b.phase, s.notify), (Phase::Inactive, None));
    }

    #[test]
    fn keep_firing_for_delays_resolution() {
        let r = rule("keep_firing_for = \"3s\"");
        let mut a = AlertState::default();
        let out = run(
            &r,
            &mut a,
            &[(0, 5.0), (1000, 0.0), (2000, 0.0), (3000, 0.0), (4000, 0.0)],
        );
        assert_eq!(out, [(0, Status::Firing), (3000, Status::Resolved)]);
    }

    #[test]
    fn repeats_on_the_repeat_interval() {
        let r = rule("repeat_interval = \"2s\"");
        let mut a = AlertState::default();
        let out = run(
            &r,
            &mut a,
            &[(0, 5.0), (1000, 5.0), (2000, 5.0), (3000, 5.0), (4500, 5.0)],
        );
        assert_eq!(
            out,
            [
                (0, Status::Firing),
                (2000, Status::Firing),
                (4500, Status::Firing)
            ]
        );
    }

    #[test]
    fn silence_defers_and_no_resolved_without_firing_notice() {
        let r = rule("");
        let mut a = AlertState::default();
        assert_eq!(step(&r, &mut a, true, 5.0, 0, true).notify, None);
        assert_eq!(a.phase, Phase::Firing);
        // Silence over while still firing: notified now.
        assert_eq!(
            step(&r, &mut a, true, 5.0, 1000, false).notify,
            Some(Status::Firing)
        );
        // Silenced throughout: resolves without telling anyone.
        let mut b = AlertState::default();
        step(&r, &mut b, true, 5.0, 0, true);
        assert_eq!(step(&r, &mut b, false, 0.0, 1000, false).notify, None);
        assert_eq!(b.phase, Phase::Resolved);
    }

    #[test]
    fn resolved_can_be_turned_off_and_absence_breaches_at_zero() {
        let r = rule("send_resolved = false");
        let mut a = AlertState::default();
        let out = run(&r, &mut a, &[(0, 5.0), (1000, 0.0)]);
        assert_eq!(out, [(0, Status::Firing)]);
        let abs: RuleConfig = toml::from_str(
            "name = \"a\"\nkind = \"absence\"\nquery = \"task:nightly\"\nwindow = \"1h\"",
        )
        .expect("parses");
        assert!(abs.breaches(0.0) && !abs.breaches(1.0));
    }

    #[test]
    fn state_survives_a_restart_without_renotifying() {
        let r = rule("");
        let mut a = AlertState::default();
        assert_eq!(
            step(&r, &mut a, true, 5.0, 0, false).notify,
            Some(Status::Firing)
        );
        let json = serde_json::to_string(&a).expect("serialise");
        let mut back: AlertState = serde_json::from_str(&json).expect("parse");
        assert_eq!(step(&r, &mut back, true, 5.0, 60_000, false).notify, None);
    }

    #[test]
    fn group_filters_quote_values() {
        let g = Group::from([("task".to_string(), "a \"b\"".to_string())]);
        assert_eq!(group_filter(&g), " task:\"a \\\"b\\\"\"");
    }
}
