//! `--log-format json`: log lines in the same envelope as the JSON events (`schema`,
//! `timestamp` RFC 3339 UTC with milliseconds, `level`, `app`), then `target`, `message` and the
//! event's fields, so a log pipeline indexes both without a regex.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::events::JSON_SCHEMA_VERSION;

/// The JSON log line format.
pub struct JsonLog;

struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// One log line (no newline).
pub fn line(
    at: std::time::SystemTime,
    level: &tracing::Level,
    target: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut out = format!(
        "{{\"schema\":{JSON_SCHEMA_VERSION},\"timestamp\":\"{}\",\"level\":\"{}\",\"app\":\"bakery\",\"target\":{}",
        humantime::format_rfc3339_millis(at),
        level.as_str().to_ascii_lowercase(),
        serde_json::Value::from(target)
    );
    // The message first, then the fields by name.
    let message = fields.get("message").cloned();
    if let Some(m) = &message {
        out.push_str(",\"message\":");
        out.push_str(&m.to_string());
    }
    for (k, v) in fields.iter().filter(|(k, _)| k.as_str() != "message") {
        // Envelope names stay the envelope's.
        let k = match k.as_str() {
            "schema" | "timestamp" | "level" | "app" | "target" => format!("field_{k}"),
            _ => k.clone(),
        };
        out.push(',');
        out.push_str(&serde_json::Value::from(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

impl<S, N> FormatEvent<S, N> for JsonLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(serde_json::Map::new());
        event.record(&mut fields);
        let meta = event.metadata();
        writeln!(
            writer,
            "{}",
            line(
                std::time::SystemTime::now(),
                meta.level(),
                meta.target(),
                fields.0
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_has_the_event_envelope() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_790_000_000_123);
        let mut f = serde_json::Map::new();
        f.insert("region".into(), "us-east-1".into());
        f.insert("message".into(), "AWS usage".into());
        f.insert("level".into(), 3.into());
        assert_eq!(
            line(at, &tracing::Level::INFO, "bakery::cli", f),
            r#"{"schema":2,"timestamp":"2026-09-21T14:13:20.123Z","level":"info","app":"bakery","target":"bakery::cli","message":"AWS usage","field_level":3,"region":"us-east-1"}"#
        );
    }
}
