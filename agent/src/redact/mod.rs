//! Redaction: secrets and personal data are removed or protected in the agent, on each
//! decoded event, before it reaches the disk buffer or the network.
//!
//! - **Field-name rules**: the value of a key named in [`RedactConfig::fields`] (compared
//!   without case, also as a `_`/`-`/`.`-separated part of the key) is redacted whole,
//!   whatever it holds.
//! - **Content rules**: the built-in [`detectors`] and the custom rules run over the value
//!   of every other field and over `msg` (only `agent` and `source`, which the agent
//!   overwrites, are skipped).
//! - **Actions** ([`Action`]): `mask`, `hash`, `drop_field`, `drop_event`, `encrypt`;
//!   see [`action`].
//! - Each redacted event gets `redacted=<rule>,<rule>` naming the rules that fired; counts
//!   per rule and dropped events are in `/metrics`.
//!
//! # One pass per value
//! All content patterns are compiled into one [`regex::RegexSet`]: a single scan of each
//! value (one lazy DFA over all patterns) says which rules match at all, and for almost
//! every value the answer is none, so that scan is the whole cost. The `regex` crate
//! extracts the patterns' required literals (`AKIA`, `ghp_`, `eyJ`, `-----BEGIN`, `://`,
//! `@`…) into a prefilter where the set allows it. Only the rules the set reported are
//! then run on their own to find the spans (a set reports which patterns matched, not
//! where), and each candidate passes its detector's check (Luhn, ranges, boundaries).
//! Overlapping spans keep the earliest; on the same start, the rule listed first (the
//! built-ins in [`detectors`] order, then custom rules), so `user:pw@host` is a
//! `url_password`, not an email.

mod action;
pub(crate) mod detectors;
mod rules;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::{Regex, RegexSet};
use spoor_sdk::event::{Event, keys};

pub(crate) use rules::parse_name;
pub use rules::{Action, CustomRule, DetectorSetting, Detectors, RedactConfig};

use crate::crypto::{KeyError, KeyRing, ValueCipher, load_key};
use action::{Actions, Replacement};
use detectors::Check;

/// The field naming the rules that redacted an event.
pub const REDACTED_KEY: &str = "redacted";
/// Environment variable with the `hash` action's key (64 hex digits).
pub const HASH_KEY_ENV: &str = "SPOOR_REDACT_HASH_KEY";
/// Environment variable with the `encrypt` action's key (64 hex digits).
pub const ENCRYPT_KEY_ENV: &str = "SPOOR_REDACT_ENCRYPT_KEY";
/// Where a generated `hash` key is kept, under the data directory.
pub const HASH_KEY_FILE: &str = "keys/redact-hash.key";
/// Where a generated `encrypt` key is kept, under the data directory.
pub const ENCRYPT_KEY_FILE: &str = "keys/redact-encrypt.key";

/// Where the running agent keeps its redactor: the enricher loads it for each line and a
/// configuration reload stores a new one (or `None` when redaction is turned off) in one
/// atomic swap.
pub(crate) type RedactorSlot = std::sync::Arc<arc_swap::ArcSwapOption<Redactor>>;

/// Keys never scanned: the agent overwrites them after redaction. Every other key is
/// scanned, even reserved ones, since a sender may put anything anywhere.
const SKIPPED_KEYS: [&str; 2] = [keys::AGENT, keys::SOURCE];

/// Why a redactor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// A custom rule's pattern does not compile.
    #[error("redact rule `{rule}`: {message}")]
    Pattern {
        /// The rule's name.
        rule: String,
        /// The compiler's message.
        message: String,
    },
    /// A key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What to do with the event after redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Keep it (possibly changed).
    Keep,
    /// A `drop_event` rule matched: drop it.
    Drop,
}

/// Counts per rule, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct RedactStats {
    names: Vec<String>,
    counts: Vec<AtomicU64>,
    dropped_events: AtomicU64,
}

impl RedactStats {
    fn index(&mut self, name: &str) -> usize {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_string());
        self.counts.push(AtomicU64::new(0));
        self.names.len() - 1
    }

    /// (rule, redactions) for every rule.
    pub fn per_rule(&self) -> Vec<(&str, u64)> {
        self.names
            .iter()
            .zip(&self.counts)
            .map(|(n, c)| (n.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Events dropped by `drop_event` rules.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Adds the counts of `old` (the stats of a redactor this one replaces) to the rules
    /// of the same name, so counters in `/metrics` keep rising across a reload. Counts of
    /// rules that no longer exist are left behind.
    pub(crate) fn carry_over(&self, old: &RedactStats) {
        for (name, count) in old.per_rule() {
            if let Some(i) = self.names.iter().position(|n| n == name) {
                self.counts[i].fetch_add(count, Ordering::Relaxed);
            }
        }
        self.dropped_events
            .fetch_add(old.dropped_events(), Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Rule {
    name: String,
    regex: Regex,
    has_groups: bool,
    check: Option<Check>,
    action: Action,
    stat: usize,
}

#[derive(Debug)]
struct FieldRule {
    /// The name lowercased, `-` and `.` as `_`.
    pattern: String,
    name: String,
    stat: usize,
}

/// A compiled redaction configuration.
#[derive(Debug)]
pub struct Redactor {
    set: RegexSet,
    rules: Vec<Rule>,
    fields: Vec<FieldRule>,
    field_action: Action,
    actions: Actions,
    stats: std::sync::Arc<RedactStats>,
}

fn is_sep(b: u8) -> bool {
    matches!(b, b'_' | b'-' | b'.')
}

/// Lowercased with `-` and `.` as `_`.
fn normalize_name(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if is_sep(b) {
                '_'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

/// Whether `name` (normalized) is `key` or a run of its `_`/`-`/`.`-separated parts,
/// ignoring case, without allocating (this runs for every key of every event).
fn part_match(key: &str, name: &str) -> bool {
    let (k, n) = (key.as_bytes(), name.as_bytes());
    if n.is_empty() || k.len() < n.len() {
        return false;
    }
    (0..=k.len() - n.len()).any(|i| {
        (i == 0 || is_sep(k[i - 1]))
            && (i + n.len() == k.len() || is_sep(k[i + n.len()]))
            && k[i..i + n.len()]
                .iter()
                .zip(n)
                .all(|(&a, &b)| a.eq_ignore_ascii_case(&b) || (is_sep(a) && b == b'_'))
    })
}

/// Checks a configuration's patterns without loading keys (for config validation).
pub fn check_config(config: &RedactConfig) -> Result<(), RedactError> {
    compile_rules(config).map(|_| ())
}

type Compiled = (Vec<(String, String, Option<Check>, Action)>, RegexSet);

fn compile_rules(config: &RedactConfig) -> Result<Compiled, RedactError> {
    let mut specs: Vec<(String, String, Option<Check>, Action)> =
        detectors::enabled(&config.detectors)
            .into_iter()
            // ASCII word boundaries: a Unicode `\b` makes the lazy DFA give up on non-ASCII
            // text and fall back to a much slower engine.
            .map(|(b, a)| {
                (
                    b.name.to_string(),
                    b.pattern.replace(r"\b", r"(?-u:\b)"),
                    b.check,
                    a,
                )
            })
            .collect();
    if let Some(p) = detectors::field_in_text_pattern(&config.fields) {
        specs.push(("field_value".into(), p, None, config.field_action));
    }
    for r in &config.rules {
        if let Err(e) = Regex::new(&r.pattern) {
            return Err(RedactError::Pattern {
                rule: r.name.clone(),
                message: e.to_string(),
            });
        }
        if r.name.is_empty()
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return Err(RedactError::Pattern {
                rule: r.name.clone(),
                message: "a rule name needs letters, digits, `_`, `-`, `.` or `:` only".into(),
            });
        }
        specs.push((r.name.clone(), r.pattern.clone(), None, r.action));
    }
    let set =
        // A larger lazy-DFA cache than the default: many patterns run at once, and a
        // cache that keeps filling up makes the set fall back to a slower engine.
        regex::RegexSetBuilder::new(specs.iter().map(|s| s.1.as_str()))
            .dfa_size_limit(16 << 20)
            .build()
            .map_err(|e| RedactError::Pattern {
            rule: "(set)".into(),
            message: e.to_string(),
        })?;
    Ok((specs, set))
}

impl Redactor {
    /// Compiles `config`; loads (or creates in `data_dir`) the keys of the `hash` and
    /// `encrypt` actions if a rule uses them.
    pub fn new(config: &RedactConfig, data_dir: &Path) -> Result<Self, RedactError> {
        let (specs, set) = compile_rules(config)?;
        let mut stats = RedactStats::default();
        let mut rules = Vec::with_capacity(specs.len());
        for (name, pattern, check, action) in specs {
            // Compiled once already by `compile_rules`.
            let regex = Regex::new(&pattern).map_err(|e| RedactError::Pattern {
                rule: name.clone(),
                message: e.to_string(),
            })?;
            rules.push(Rule {
                stat: stats.index(&name),
                has_groups: regex.captures_len() > 1,
                name,
                regex,
                check,
                action,
            });
        }
        let fields = config
            .fields
            .iter()
            .map(|f| FieldRule {
                pattern: normalize_name(f),
                name: f.to_ascii_lowercase(),
                stat: stats.index(&f.to_ascii_lowercase()),
            })
            .collect();
        let uses = |a: Action| {
            rules.iter().any(|r| r.action == a)
                || (config.field_action == a && !config.fields.is_empty())
        };
        let hash_key = if uses(Action::Hash) {
            Some(load_key(
                config.hash_key_file.as_deref(),
                HASH_KEY_ENV,
                &data_dir.join(HASH_KEY_FILE),
            )?)
        } else {
            None
        };
        let values = if uses(Action::Encrypt) {
            let key = load_key(
                config.encrypt_key_file.as_deref(),
                ENCRYPT_KEY_ENV,
                &data_dir.join(ENCRYPT_KEY_FILE),
            )?;
            Some(ValueCipher::new(KeyRing::new(key, Vec::new())))
        } else {
            None
        };
        Ok(Redactor {
            set,
            rules,
            fields,
            field_action: config.field_action,
            actions: Actions::new(hash_key.as_ref(), values),
            stats: std::sync::Arc::new(stats),
        })
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> std::sync::Arc<RedactStats> {
        self.stats.clone()
    }

    fn count(&self, stat: usize) {
        if let Some(c) = self.stats.counts.get(stat) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn field_rule(&self, key: &str) -> Option<&FieldRule> {
        if self.fields.is_empty() {
            return None;
        }
        self.fields.iter().find(|f| part_match(key, &f.pattern))
    }

    /// Redacts `event` in place. A failure to encrypt (the system's random source) masks
    /// the value instead, so nothing leaks.
    pub fn apply(&self, event: &mut Event) -> Outcome {
        let mut fired: Vec<&str> = Vec::new();
        let mut drop_keys: Vec<String> = Vec::new();
        let mut drop_event = false;
        for (key, value) in event.pairs_mut() {
            if SKIPPED_KEYS.contains(&key) {
                continue;
            }
            if let Some(f) = self.field_rule(key) {
                self.count(f.stat);
                if !fired.contains(&f.name.as_str()) {
                    fired.push(&f.name);
                }
                match self.replace(self.field_action, &f.name, value) {
                    Replacement::Text(t) => *value = t,
                    Replacement::DropField => drop_keys.push(key.to_string()),
                    Replacement::DropEvent => drop_event = true,
                }
                continue;
            }
            if value.is_empty() {
                continue;
            }
            // `is_match` is a plain (non-overlapping) scan that can stop early; nearly
            // every value matches nothing, so the overlapping `matches` runs rarely.
            // (Dropping it measured the same within noise on the loghub corpus: a few
            // percent faster with every detector on, a few slower with the defaults.)
            if !self.set.is_match(value) {
                continue;
            }
            let matched = self.set.matches(value);
            if !matched.matched_any() {
                continue;
            }
            let mut spans: Vec<(usize, usize, usize)> = Vec::new();
            for i in matched.iter() {
                let rule = &self.rules[i];
                self.spans(rule, i, value, &mut spans);
            }
            if spans.is_empty() {
                continue;
            }
            spans.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)).then(b.1.cmp(&a.1)));
            let mut out = String::with_capacity(value.len());
            let mut at = 0;
            let mut dropped = false;
            for (start, end, i) in spans {
                if start < at {
                    continue;
                }
                let rule = &self.rules[i];
                self.count(rule.stat);
                if !fired.contains(&rule.name.as_str()) {
                    fired.push(&rule.name);
                }
                match self.replace(rule.action, &rule.name, &value[start..end]) {
                    Replacement::Text(t) => {
                        out.push_str(&value[at..start]);
                        out.push_str(&t);
                        at = end;
                    }
                    Replacement::DropField => {
                        drop_keys.push(key.to_string());
                        dropped = true;
                        break;
                    }
                    Replacement::DropEvent => {
                        drop_event = true;
                        dropped = true;
                        break;
                    }
                }
            }
            if !dropped {
                out.push_str(&value[at..]);
                *value = out;
            }
        }
        if drop_event {
            self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            return Outcome::Drop;
        }
        if fired.is_empty() {
            return Outcome::Keep;
        }
        let names = fired.join(",");
        for k in &drop_keys {
            event.remove(k);
        }
        event.set(REDACTED_KEY, names);
        Outcome::Keep
    }

    fn spans(&self, rule: &Rule, i: usize, value: &str, spans: &mut Vec<(usize, usize, usize)>) {
        if !rule.has_groups {
            for m in rule.regex.find_iter(value) {
                let span = match rule.check {
                    None => Some((m.start(), m.end())),
                    Some(c) => c(value, m.start(), m.end()),
                };
                if let Some((s, e)) = span.filter(|(s, e)| s < e) {
                    spans.push((s, e, i));
                }
            }
            return;
        }
        for caps in rule.regex.captures_iter(value) {
            let Some(whole) = caps.get(0) else { continue };
            if let Some(c) = rule.check
                && c(value, whole.start(), whole.end()).is_none()
            {
                continue;
            }
            let m = (1..caps.len()).find_map(|g| caps.get(g)).unwrap_or(whole);
            if !m.is_empty() {
                spans.push((m.start(), m.end(), i));
            }
        }
    }

    fn replace(&self, action: Action, rule: &str, matched: &str) -> Replacement {
        match self.actions.apply(action, rule, matched) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(rule, error = %e, "Encrypting a value failed; masked it instead.");
                Replacement::Text(format!("[REDACTED:{rule}]"))
            }
        }
    }
}

#[cfg(test)]
mod tests;
