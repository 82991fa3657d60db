//! A YAML emitter for document trees.
//!
//! Documents are JSON-shaped, so they are converted to a `serde_json::Value` and written here in
//! block style. Strings are written plain only when no YAML 1.1 or 1.2 reader can take them for
//! anything else; the rest, including `on`, `off`, `yes`, `no`, `y` and `n`, are double-quoted
//! (JSON string syntax, which is valid YAML), so variant keys survive every YAML tool.

use std::fmt::Write;

use serde_json::{Map, Value};

/// Words YAML 1.1 or 1.2 resolve to booleans or null when plain.
const RESERVED: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];

/// Whether `s` reads back as the same string when written plain.
fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && !s.ends_with(' ')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | '/' | '@' | '+' | '-')
        })
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

fn write_string(out: &mut String, s: &str) {
    if plain_is_safe(s) {
        out.push_str(s);
    } else {
        // A JSON string literal is a valid YAML double-quoted scalar.
        out.push_str(&Value::String(s.to_owned()).to_string());
    }
}

/// A value that fits on the line of its key or dash.
fn write_inline(out: &mut String, value: &Value) -> bool {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        _ => return false,
    }
    true
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize, first_inline: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !first_inline {
            out.extend(std::iter::repeat_n(' ', indent));
        }
        write_string(out, key);
        out.push(':');
        let mut line = String::from(" ");
        if write_inline(&mut line, value) {
            out.push_str(&line);
            out.push('\n');
        } else {
            out.push('\n');
            match value {
                Value::Array(items) => write_list(out, items, indent),
                Value::Object(map) => write_map(out, map, indent + 2, false),
                _ => {}
            }
        }
    }
}

fn write_list(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.extend(std::iter::repeat_n(' ', indent));
        out.push_str("- ");
        if write_inline(out, item) {
            out.push('\n');
            continue;
        }
        match item {
            Value::Object(map) => write_map(out, map, indent + 2, true),
            Value::Array(inner) => {
                out.push('\n');
                write_list(out, inner, indent + 2);
            }
            _ => {}
        }
    }
}

/// Writes `value` as a YAML document.
pub(crate) fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_list(&mut out, items, 0),
        other => {
            write_inline(&mut out, other);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(value: &Value) -> Value {
        let text = to_string(value);
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn boolean_like_words_are_quoted() {
        let value = json!({"on": "off", "variants": {"yes": "no", "y": "n", "Off": "ON"}});
        let text = to_string(&value);
        for word in [
            "\"on\"", "\"off\"", "\"yes\"", "\"no\"", "\"y\"", "\"n\"", "\"Off\"", "\"ON\"",
        ] {
            assert!(text.contains(word), "{word} not quoted in:\n{text}");
        }
        assert_eq!(round_trip(&value), value);
    }

    #[test]
    fn tricky_strings_survive() {
        let strings = [
            "",
            " lead",
            "trail ",
            "1.0",
            "0x1F",
            "1_000",
            ".inf",
            "-",
            "- x",
            "a: b",
            "x #y",
            "#x",
            "@x",
            "`x",
            "!x",
            "&x",
            "*x",
            "%x",
            "|x",
            ">x",
            "'x",
            "\"x",
            "{x",
            "[x",
            "multi\nline",
            "tab\t",
            "é",
            "null",
            "~",
            "2025-01-01",
            "1:20",
            "checkout-v2",
            "?x",
            "x,y",
        ];
        for s in strings {
            let value = json!({ s: [s, {s: s}], "nested": [[s]] });
            assert_eq!(round_trip(&value), value, "{s:?}");
        }
    }

    #[test]
    fn shapes_round_trip() {
        let value = json!({
            "flags": [{"key": "a", "variants": {"on": true, "off": false}, "rules": [],
                       "default": {"split": {"weights": [{"variant": "on", "weight": 10000}]}}}],
            "empty": {}, "n": 1.5, "big": 100000, "neg": -3, "null": null, "list": [[1, 2], [], {}]
        });
        assert_eq!(round_trip(&value), value);
    }
}
