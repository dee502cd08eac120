//! Log lines on stderr through `tracing`; `MICROSEG_LOG=debug|info|warn|error` sets the
//! level (default info), `--log-format text|json` the format of the daemons' lines.
//!
//! Text: `2026-01-02T03:04:05.123456Z INFO  message key=value ...`, with control
//! characters escaped in the message and every value, so that a name or file name that
//! holds a newline or a terminal escape can neither forge a log line nor repaint a
//! terminal. A value with a space, `=` or `"` in it, or none at all, is quoted.
//!
//! JSON: one object a line, `{"timestamp":…,"level":…,"target":…,"message":…}` and the
//! fields, numbers and booleans as such. What libraries write through `log` (aya, rustls,
//! tokio-postgres) arrives as events too; the text lines name its origin as `target=`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use microseg_policy::escape_control;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// A timestamp, the level, the message, then key=value fields.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// The daemons' `--log-format`.
#[derive(clap::Args)]
pub struct LogArgs {
    /// How log lines on stderr are written: text (key=value fields) or json (one object
    /// a line, for log collectors).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
}

pub fn init(format: LogFormat) {
    let level = match std::env::var("MICROSEG_LOG").as_deref() {
        Ok("debug") => LevelFilter::DEBUG,
        Ok("warn") => LevelFilter::WARN,
        Ok("error") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    // At debug, the HTTP/2 and gRPC stacks (h2, hyper, tower, tonic) describe every
    // frame: they stay at info. Ours and the libraries that log through `log` do not.
    let targets = Targets::new()
        .with_default(level.min(LevelFilter::INFO))
        .with_targets(["microseg", "aya", "rustls", "tokio_postgres"].map(|t| (t, level)));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(Lines(format));
    // Also hands `log` records to tracing, up to the most verbose level above.
    let _ = tracing_subscriber::registry()
        .with(targets)
        .with(lines)
        .try_init();
}

/// Formats each event as one line (the writer gets it whole).
struct Lines(LogFormat);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut out: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = Line {
            timestamp: microseg_common::time::rfc3339(now),
            level: event.metadata().level().as_str(),
            target: fields
                .log_target
                .take()
                .unwrap_or_else(|| event.metadata().target().to_string()),
            fields,
        };
        let text = match self.0 {
            LogFormat::Text => line.text(),
            LogFormat::Json => line.json(),
        };
        writeln!(out, "{text}")
    }
}

/// One event, ready to be written.
struct Line {
    timestamp: String,
    level: &'static str,
    target: String,
    fields: Fields,
}

impl Line {
    fn text(&self) -> String {
        let mut s = format!("{} {:5}", self.timestamp, self.level);
        if !self.fields.message.is_empty() {
            s.push(' ');
            s.push_str(&escape_control(&self.fields.message));
        }
        for (key, value) in &self.fields.values {
            let _ = write!(s, " {key}={}", TextValue(&value.to_text()));
        }
        // Our own crates' events speak for themselves; a library's say whose they are.
        if !self.target.starts_with("microseg") {
            let _ = write!(s, " target={}", TextValue(&self.target));
        }
        s
    }

    /// Written by hand so that the keys keep this order (serde_json's map sorts them).
    fn json(&self) -> String {
        let string = |s: &str| serde_json::Value::from(s).to_string();
        let mut s = format!(
            "{{\"timestamp\":{},\"level\":{},\"message\":{},\"target\":{}",
            string(&self.timestamp),
            string(self.level),
            string(&self.fields.message),
            string(&self.target)
        );
        for (key, value) in &self.fields.values {
            let _ = write!(s, ",{}:{}", string(key), value.to_json());
        }
        s.push('}');
        s
    }
}

/// A text value as logfmt writes one: as it is, unless it is empty or holds a space, `=`,
/// `"` or a control character; then quoted, with `\` and `"` escaped by a backslash and
/// control characters as `escape_control` writes them.
struct TextValue<'a>(&'a str);

impl fmt::Display for TextValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        let plain = matches!(escape_control(value), Cow::Borrowed(_));
        if plain && !value.is_empty() && !value.contains([' ', '=', '"']) {
            return f.write_str(value);
        }
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        write!(f, "\"{}\"", escape_control(&quoted))
    }
}

enum Value {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Value {
    fn to_text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Text(s) => s.clone().into(),
            Value::Number(n) => n.clone().into(),
            Value::Bool(b) => (*b).into(),
        }
    }
}

/// An event's message and fields, in the order they were given.
#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(&'static str, Value)>,
    /// Where a `log` record came from (the bridge's `log.target`).
    log_target: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => self.message = value.to_text(),
            "log.target" => self.log_target = Some(value.to_text()),
            // The bridge's other fields say where in the library's source: not for users.
            name if name.starts_with("log.") => {}
            name => self.values.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Text(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Number(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Number(value.into()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        match serde_json::Number::from_f64(value) {
            Some(n) => self.put(field, Value::Number(n)),
            None => self.put(field, Value::Text(value.to_string())),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Text(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Text(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The lines `format` makes of what `log` emits.
    fn lines(format: LogFormat, log: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(Lines(format))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn forged() {
        tracing::warn!(
            node = "n\u{1b}[2J1",
            revision = 7u64,
            path = "a b=c",
            file = r"a\nb",
            "bad file\nINFO  forged \u{202e}line"
        );
    }

    #[test]
    fn a_text_line_has_a_timestamp_the_message_and_fields_with_controls_escaped() {
        let text = lines(LogFormat::Text, forged);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let (timestamp, rest) = text.trim_end().split_once(' ').unwrap();
        assert!(
            timestamp.len() == 27 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "{timestamp}"
        );
        assert_eq!(
            rest,
            r#"WARN  bad file\nINFO  forged \u{202e}line node="n\x1b[2J1" revision=7 path="a b=c" file=a\nb"#
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_typed_fields() {
        let text = lines(LogFormat::Json, forged);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "bad file\nINFO  forged \u{202e}line");
        assert_eq!(line["node"], "n\u{1b}[2J1");
        assert_eq!(line["revision"], 7);
        assert_eq!(line["target"], "microseg::logger::tests");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }
}
