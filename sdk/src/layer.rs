//! [`SpoorLayer`]: the `tracing-subscriber` layer that turns each event into one logfmt line
//! and hands it to the [`Transport`].
//!
//! A line is `ts level msg`, then the other reserved keys (`task`, `task_id`, `attempt`,
//! `depth`, `version`, `host`, `pid`, `instance`, `kind`), then the fields of the enclosing
//! spans from the outermost in, then the event's own fields. A key appears once: the
//! innermost wins (the event over its spans, an inner span over an outer one). A field
//! named like a reserved key (`task_id` on a span, `kind = "audit"` on an event) fills that
//! reserved key instead of the configured default; fields named `ts` or `level` are kept as
//! `_ts` and `_level`, since those two are always the SDK's.
//!
//! The calling thread only formats (into thread-local scratch buffers, so a line costs no
//! allocation) and copies the line into the transport's queue; see [`crate::transport`]
//! for what happens next.
//!
//! **Debug buffering** ([`Config::debug_buffer_bytes`]): inside a [`crate::task()`] scope,
//! `debug` and `trace` events are held in a byte-capped ring per run (oldest evicted, and
//! counted in a `spoor debug buffer evicted events` line). When the run logs an `error`
//! (or `fatal`) event, the held lines are written first, in order, and later debug lines
//! of that run go straight out; when the run ends without one, they are discarded. While
//! buffering is on, debug and trace events are captured for the buffer even when the
//! level filter would not write them.
//!
//! **No recursion.** Events from the transport's worker thread are ignored. An event raised
//! while a line is being formatted (a field's `Debug` that logs) is handed by `tracing`
//! itself to no subscriber; should a subscriber stack dispatch it anyway, the layer formats
//! it with fresh buffers rather than re-borrowing its own, up to a nesting depth of 4.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use time::UtcOffset;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TracingEvent, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::Config;
use crate::event::{Level, RESERVED_ORDER, keys};
use crate::logfmt::{write_key, write_value};
use crate::timestamp::TimestampCache;
use crate::transport::{Transport, on_worker_thread};

/// The target of the panic hook's event, written as `level=fatal`.
pub(crate) const PANIC_TARGET: &str = "spoor_sdk::panic";
/// The target of the span made by [`crate::task()`].
pub(crate) const TASK_TARGET: &str = "spoor_sdk::task";

/// Reserved keys a field can fill: `RESERVED_ORDER` without `ts` and `level`.
const SLOTS: usize = RESERVED_ORDER.len() - 2;
const MAX_NESTING: u8 = 4;

fn slot_of(name: &str) -> Option<usize> {
    if name == "message" {
        return Some(0);
    }
    RESERVED_ORDER[2..].iter().position(|k| *k == name)
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static NESTING: Cell<u8> = const { Cell::new(0) };
}

/// Whether this thread is inside the layer right now (the panic hook must not log then).
pub(crate) fn in_layer() -> bool {
    NESTING.with(|n| n.get() > 0)
}

/// The layer. Make one with [`crate::spoor_layer`] (to add to your own subscriber) or let
/// [`crate::init`] install it.
#[derive(Clone)]
pub struct SpoorLayer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SpoorLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoorLayer")
            .field("filter", &self.inner.filter)
            .finish_non_exhaustive()
    }
}

struct Inner {
    transport: Arc<Transport>,
    filter: Targets,
    defaults: [Option<String>; SLOTS],
    offset: Option<UtcOffset>,
    debug_buffer: Option<usize>,
}

impl SpoorLayer {
    pub(crate) fn new(config: &Config, transport: Arc<Transport>) -> SpoorLayer {
        let mut defaults: [Option<String>; SLOTS] = Default::default();
        let mut set = |key: &str, value: Option<String>| {
            if let Some(slot) = slot_of(key) {
                defaults[slot] = value;
            }
        };
        set(keys::TASK, config.task.task.clone());
        set(keys::TASK_ID, config.task.task_id.clone());
        set(keys::ATTEMPT, config.task.attempt.map(|a| a.to_string()));
        set(keys::DEPTH, config.task.depth.map(|d| d.to_string()));
        set(keys::VERSION, config.version.clone());
        set(keys::HOST, Some(config.host.clone()));
        set(keys::PID, Some(std::process::id().to_string()));
        set(keys::INSTANCE, config.instance.clone());
        // The local offset can only be read safely while the process has one thread, so
        // it is read once here; when that fails, times stay in UTC.
        let offset = config
            .local_time
            .then(|| UtcOffset::current_local_offset().ok())
            .flatten();
        SpoorLayer {
            inner: Arc::new(Inner {
                transport,
                filter: config.filter.clone(),
                defaults,
                offset,
                debug_buffer: config.debug_buffer_bytes,
            }),
        }
    }

    fn wants(&self, meta: &Metadata<'_>) -> bool {
        let target = meta.target();
        if meta.is_span() {
            return target == TASK_TARGET || self.inner.filter.would_enable(target, meta.level());
        }
        target == PANIC_TARGET
            || self.inner.filter.would_enable(target, meta.level())
            || (self.inner.debug_buffer.is_some() && is_verbose(meta.level()))
    }
}

fn is_verbose(level: &tracing::Level) -> bool {
    *level == tracing::Level::DEBUG || *level == tracing::Level::TRACE
}

fn level_of(meta: &Metadata<'_>) -> Level {
    if meta.target() == PANIC_TARGET {
        return Level::Fatal;
    }
    match *meta.level() {
        tracing::Level::TRACE => Level::Trace,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::INFO => Level::Info,
        tracing::Level::WARN => Level::Warn,
        _ => Level::Error,
    }
}

/// Fields of a span or event, keys already encoded; reserved keys kept raw in slots.
#[derive(Debug, Default)]
struct FieldSet {
    /// ` key=value` pairs, each with its leading space.
    encoded: String,
    keys: Vec<(&'static str, usize, usize)>,
    raw: String,
    reserved: [Option<(usize, usize)>; SLOTS],
}

impl FieldSet {
    fn clear(&mut self) {
        self.encoded.clear();
        self.keys.clear();
        self.raw.clear();
        self.reserved = [None; SLOTS];
    }

    fn reserved(&self, slot: usize) -> Option<&str> {
        self.reserved[slot].map(|(a, b)| &self.raw[a..b])
    }

    /// `self` updated with `newer`'s values (a span's `record`).
    fn merged(&self, newer: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        let kept = self
            .keys
            .iter()
            .filter(|(k, _, _)| !newer.keys.iter().any(|n| n.0 == *k))
            .map(|&(k, a, b)| (k, &self.encoded[a..b]));
        let fresh = newer
            .keys
            .iter()
            .map(|&(k, a, b)| (k, &newer.encoded[a..b]));
        for (key, pair) in kept.chain(fresh) {
            let start = out.encoded.len();
            out.encoded.push_str(pair);
            out.keys.push((key, start, out.encoded.len()));
        }
        for slot in 0..SLOTS {
            if let Some(v) = newer.reserved(slot).or_else(|| self.reserved(slot)) {
                let start = out.raw.len();
                out.raw.push_str(v);
                out.reserved[slot] = Some((start, out.raw.len()));
            }
        }
        out
    }
}

struct FieldVisitor<'a> {
    set: &'a mut FieldSet,
    tmp: &'a mut String,
}

impl FieldVisitor<'_> {
    /// Where a value goes: `Some(slot)` for a reserved key, else a new encoded pair whose
    /// key is already written.
    fn begin(&mut self, name: &'static str) -> Option<usize> {
        if let Some(slot) = slot_of(name) {
            return Some(slot);
        }
        self.set.encoded.push(' ');
        match name {
            keys::TS => self.set.encoded.push_str("_ts"),
            keys::LEVEL => self.set.encoded.push_str("_level"),
            _ => write_key(&mut self.set.encoded, name),
        }
        self.set.encoded.push('=');
        None
    }

    fn raw(&mut self, name: &'static str, write: impl FnOnce(&mut String)) {
        let start_pair = self.set.encoded.len();
        match self.begin(name) {
            Some(slot) => {
                let start = self.set.raw.len();
                write(&mut self.set.raw);
                self.set.reserved[slot] = Some((start, self.set.raw.len()));
            }
            None => {
                // Numbers and booleans never need quoting.
                write(&mut self.set.encoded);
                self.set
                    .keys
                    .push((name, start_pair, self.set.encoded.len()));
            }
        }
    }

    fn text(&mut self, name: &'static str, value: &str) {
        let start_pair = self.set.encoded.len();
        match self.begin(name) {
            Some(slot) => {
                let start = self.set.raw.len();
                self.set.raw.push_str(value);
                self.set.reserved[slot] = Some((start, self.set.raw.len()));
            }
            None => {
                write_value(&mut self.set.encoded, value);
                self.set
                    .keys
                    .push((name, start_pair, self.set.encoded.len()));
            }
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut tmp = std::mem::take(self.tmp);
        tmp.clear();
        // Writing to a String cannot fail.
        let _ = write!(tmp, "{value:?}");
        self.text(field.name(), &tmp);
        *self.tmp = tmp;
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field.name(), |s| {
            let _ = write!(s, "{value}");
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field.name(), |s| {
            let _ = write!(s, "{value}");
        });
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field.name(), |s| {
            let _ = write!(s, "{value}");
        });
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field.name(), |s| {
            let _ = write!(s, "{value}");
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field.name(), |s| {
            s.push_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.raw(field.name(), |s| {
            let _ = write!(s, "{value}");
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            let _ = write!(text, ": {s}");
            source = s.source();
        }
        self.text(field.name(), &text);
    }
}

/// Per-thread buffers reused for every event.
#[derive(Default)]
struct Scratch {
    event: FieldSet,
    tmp: String,
    span_raw: String,
    span_reserved: [Option<(usize, usize)>; SLOTS],
    span_pairs: String,
    segments: Vec<(usize, usize)>,
    seen: Vec<&'static str>,
    /// The line being formatted; copied into the transport's queue, then reused.
    line: String,
    clock: TimestampCache,
}

/// The debug ring of one task run, kept in the task span's extensions.
struct TaskRing {
    ring: Mutex<Ring>,
}

struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
    max_bytes: usize,
    evicted: u64,
    errored: bool,
}

impl Ring {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.bytes > self.max_bytes {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.len();
                    self.evicted += 1;
                }
                None => break,
            }
        }
    }
}

impl<S> Layer<S> for SpoorLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if self.wants(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut set = FieldSet::default();
        let mut tmp = String::new();
        attrs.record(&mut FieldVisitor {
            set: &mut set,
            tmp: &mut tmp,
        });
        let mut ext = span.extensions_mut();
        ext.insert(set);
        if let Some(max_bytes) = self.inner.debug_buffer
            && attrs.metadata().target() == TASK_TARGET
        {
            ext.insert(TaskRing {
                ring: Mutex::new(Ring {
                    lines: VecDeque::new(),
                    bytes: 0,
                    max_bytes,
                    evicted: 0,
                    errored: false,
                }),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut newer = FieldSet::default();
        let mut tmp = String::new();
        values.record(&mut FieldVisitor {
            set: &mut newer,
            tmp: &mut tmp,
        });
        let mut ext = span.extensions_mut();
        let merged = match ext.get_mut::<FieldSet>() {
            Some(old) => old.merged(&newer),
            None => newer,
        };
        ext.replace(merged);
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        if on_worker_thread() {
            return;
        }
        let depth = NESTING.with(|n| {
            let d = n.get();
            n.set(d.saturating_add(1));
            d
        });
        if depth < MAX_NESTING {
            let handled = SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => {
                    self.handle(event, &ctx, &mut scratch);
                    true
                }
                Err(_) => false,
            });
            if !handled {
                self.handle(event, &ctx, &mut Scratch::default());
            }
        }
        NESTING.with(|n| n.set(depth));
    }
}

impl SpoorLayer {
    fn handle<S>(&self, event: &TracingEvent<'_>, ctx: &Context<'_, S>, scratch: &mut Scratch)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        let level = level_of(meta);
        let inner = &*self.inner;
        let Some(_max) = inner.debug_buffer else {
            self.format(event, ctx, level, scratch);
            inner.transport.send_str(&scratch.line);
            return;
        };
        let direct =
            meta.target() == PANIC_TARGET || inner.filter.would_enable(meta.target(), meta.level());
        let task_span = self.format(event, ctx, level, scratch);
        let line = scratch.line.clone();
        let ring_span = task_span.and_then(|id| ctx.span(&id));
        let ext = ring_span.as_ref().map(|s| s.extensions());
        let ring = ext.as_ref().and_then(|e| e.get::<TaskRing>());
        let Some(ring) = ring else {
            if direct {
                inner.transport.send(line);
            }
            return;
        };
        let mut ring = ring.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.errored {
            if direct || level <= Level::Debug {
                inner.transport.send(line);
            }
        } else if level <= Level::Debug {
            ring.push(line);
        } else if level >= Level::Error {
            ring.errored = true;
            if ring.evicted > 0 {
                let mut notice = inner
                    .transport
                    .notice(Level::Warn, "spoor debug buffer evicted events");
                notice.push("evicted", ring.evicted.to_string());
                inner.transport.send(notice.to_line());
            }
            for held in ring.lines.drain(..) {
                inner.transport.send(held);
            }
            ring.bytes = 0;
            inner.transport.send(line);
        } else if direct {
            inner.transport.send(line);
        }
    }

    /// Formats one line into `s.line`; returns the innermost task span that holds a debug
    /// ring.
    fn format<S>(
        &self,
        event: &TracingEvent<'_>,
        ctx: &Context<'_, S>,
        level: Level,
        s: &mut Scratch,
    ) -> Option<Id>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let inner = &*self.inner;
        let now = std::time::SystemTime::now();
        s.event.clear();
        event.record(&mut FieldVisitor {
            set: &mut s.event,
            tmp: &mut s.tmp,
        });
        s.span_raw.clear();
        s.span_reserved = [None; SLOTS];
        s.span_pairs.clear();
        s.segments.clear();
        s.seen.clear();
        s.seen.extend(s.event.keys.iter().map(|k| k.0));
        let mut task_span = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let ext = span.extensions();
                if task_span.is_none() && ext.get::<TaskRing>().is_some() {
                    task_span = Some(span.id());
                }
                let Some(fields) = ext.get::<FieldSet>() else {
                    continue;
                };
                for slot in 0..SLOTS {
                    if s.event.reserved[slot].is_some() || s.span_reserved[slot].is_some() {
                        continue;
                    }
                    if let Some(v) = fields.reserved(slot) {
                        let start = s.span_raw.len();
                        s.span_raw.push_str(v);
                        s.span_reserved[slot] = Some((start, s.span_raw.len()));
                    }
                }
                for &(key, a, b) in fields.keys.iter().rev() {
                    if !s.seen.contains(&key) {
                        s.seen.push(key);
                        let start = s.span_pairs.len();
                        s.span_pairs.push_str(&fields.encoded[a..b]);
                        s.segments.push((start, s.span_pairs.len()));
                    }
                }
            }
        }
        let line = &mut s.line;
        line.clear();
        line.push_str("ts=");
        s.clock.write(line, now, inner.offset);
        line.push_str(" level=");
        line.push_str(level.as_str());
        for (slot, key) in RESERVED_ORDER[2..].iter().enumerate() {
            let value = s
                .event
                .reserved(slot)
                .or_else(|| s.span_reserved[slot].map(|(a, b)| &s.span_raw[a..b]))
                .or(inner.defaults[slot].as_deref());
            match value {
                Some(v) => {
                    line.push(' ');
                    line.push_str(key);
                    line.push('=');
                    write_value(line, v);
                }
                None if slot == 0 => line.push_str(" msg="),
                None => {}
            }
        }
        for &(a, b) in s.segments.iter().rev() {
            line.push_str(&s.span_pairs[a..b]);
        }
        line.push_str(&s.event.encoded);
        line.push('\n');
        task_span
    }
}
