//! Rendering results as a table, JSON or YAML, and times as tables show them.

use flagstaff_engine::Format;
use serde_json::Value;

use crate::args::Output;

/// Rows as aligned columns under a header; on a terminal (and without `NO_COLOR`), the header
/// is bold and on/off states are green/red.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    render(header, rows, colour())
}

/// Whether to colour output: only on a terminal, and never with `NO_COLOR` set (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The ANSI style of a cell, if it has one.
fn style(header: bool, cell: &str) -> Option<&'static str> {
    match (header, cell) {
        (true, _) => Some("\x1b[1m"),
        (false, "on") => Some("\x1b[32m"),
        (false, "off") => Some("\x1b[31m"),
        _ => None,
    }
}

fn render(header: &[&str], rows: &[Vec<String>], colour: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |is_header: bool, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            match style(is_header, cell).filter(|_| colour) {
                Some(code) => {
                    text.push_str(code);
                    text.push_str(cell);
                    text.push_str("\x1b[0m");
                }
                None => text.push_str(cell),
            }
            text.extend(std::iter::repeat_n(
                ' ',
                widths[i].saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(true, &mut header.iter().copied());
    for row in rows {
        line(false, &mut row.iter().map(String::as_str));
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

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_and_without_colour() {
        let rows = vec![
            vec!["checkout-v2".to_owned(), "on".to_owned(), "x".to_owned()],
            vec!["b".to_owned(), "off".to_owned(), "y".to_owned()],
        ];
        assert_eq!(
            render(&["FLAG", "STATE", "V"], &rows, false),
            "FLAG         STATE  V\ncheckout-v2  on     x\nb            off    y\n"
        );
        let coloured = render(&["FLAG", "STATE", "V"], &rows, true);
        assert_eq!(
            coloured.lines().nth(1),
            Some("checkout-v2  \x1b[32mon\x1b[0m     x")
        );
        let plain: String = coloured
            .replace("\x1b[1m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "");
        assert_eq!(plain, render(&["FLAG", "STATE", "V"], &rows, false));
    }
}
