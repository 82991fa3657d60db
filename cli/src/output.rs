//! Rendering results as a table, JSON or YAML.

use flagstaff_engine::Format;
use serde_json::Value;

use crate::args::Output;

/// Rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(
                ' ',
                widths[i].saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `value` as JSON or YAML; `None` for the table format, which each command renders itself.
pub fn structured(value: &Value, output: Output) -> Option<String> {
    match output {
        Output::Table => None,
        Output::Json => Some(flagstaff_engine::to_text(value, Format::Json)),
        Output::Yaml => Some(flagstaff_engine::to_text(value, Format::Yaml)),
    }
}

/// A Unix-millisecond time as `2026-11-26 14:03:09 UTC`; `-` for 0 (not set).
pub fn timestamp(unix_ms: i64) -> String {
    if unix_ms == 0 {
        return "-".to_owned();
    }
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix_ms.to_string())
}
