//! Structural decoding: a JSON value tree (from JSON or YAML text) into the model.
//!
//! Unlike a derived `Deserialize`, which stops at the first error, this walks the whole document
//! and reports every unknown field, missing field and wrongly typed value, each with its path.
//! `null` counts as absent, so an empty YAML field is the same as a missing one.

use serde_json::{Map, Value};

use crate::bucket::BUCKETS;
use crate::model::{
    Condition, Document, Flag, Kind, Op, Prerequisite, Rule, Segment, SegmentRule, Serve, Split,
    Variants, Weight,
};
use crate::problem::{describe, Problems};

/// The fields of one JSON object being decoded, with its path for messages.
struct Object<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Object<'a> {
    /// Checks `value` is an object and reports fields outside `required` and `optional`, and
    /// required fields that are absent.
    fn open(
        value: &'a Value,
        path: &'a str,
        required: &[&str],
        optional: &[&str],
        problems: &mut Problems,
    ) -> Option<Object<'a>> {
        let Value::Object(map) = value else {
            problems.push(path, format!("must be an object, got {}", describe(value)));
            return None;
        };
        for name in map.keys() {
            if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
                let known = required.iter().chain(optional).copied();
                let message = match closest(name, known) {
                    Some(guess) => format!("unknown field \"{name}\" (did you mean \"{guess}\"?)"),
                    None => format!("unknown field \"{name}\""),
                };
                problems.push(path, message);
            }
        }
        for name in required {
            if map.get(*name).is_none_or(Value::is_null) {
                problems.push(path, format!("missing required field \"{name}\""));
            }
        }
        Some(Object { map, path })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn field_path(&self, name: &str) -> String {
        join(self.path, name)
    }

    fn string(&self, name: &str, problems: &mut Problems) -> Option<String> {
        let value = self.get(name)?;
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                problems.push(
                    self.field_path(name),
                    format!("must be a string, got {}", describe(other)),
                );
                None
            }
        }
    }

    fn bool(&self, name: &str, problems: &mut Problems) -> Option<bool> {
        let value = self.get(name)?;
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                problems.push(
                    self.field_path(name),
                    format!("must be true or false, got {}", describe(other)),
                );
                None
            }
        }
    }

    fn list(&self, name: &str, problems: &mut Problems) -> Option<&'a Vec<Value>> {
        let value = self.get(name)?;
        match value {
            Value::Array(items) => Some(items),
            other => {
                problems.push(
                    self.field_path(name),
                    format!("must be a list, got {}", describe(other)),
                );
                None
            }
        }
    }

    fn strings(&self, name: &str, problems: &mut Problems) -> Option<Vec<String>> {
        let items = self.list(name, problems)?;
        let path = self.field_path(name);
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => {
                    ok = false;
                    problems.push(
                        format!("{path}[{i}]"),
                        format!("must be a string, got {}", describe(other)),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    fn version(&self, problems: &mut Problems) -> Option<u64> {
        let value = self.get("version")?;
        match value.as_u64() {
            Some(v) => Some(v),
            None => {
                problems.push(
                    self.field_path("version"),
                    format!(
                        "must be a whole number of at least 0, got {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The known name closest to `name` by edit distance, when it is a plausible typo.
fn closest<'k>(name: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The path of the `index`th element of a keyed list: `flags[KEY]` when the element has a string
/// key, else `flags[INDEX]`.
pub(crate) fn keyed_path(list: &str, index: usize, value: &Value) -> String {
    match value.get("key").and_then(Value::as_str) {
        Some(key) if !key.is_empty() => crate::problem::keyed(list, key),
        _ => format!("{list}[{index}]"),
    }
}

/// Keys of the flags and segments of a document that did not decode: they exist, so other
/// documents may refer to them without an "unknown" problem on top of their own.
#[derive(Debug, Default)]
pub(crate) struct Undecoded {
    pub(crate) flags: Vec<String>,
    pub(crate) segments: Vec<String>,
}

/// Decodes an export document, keeping every flag and segment that decoded so the caller can
/// go on to validate them even when others have problems.
pub(crate) fn decode_document(
    value: &Value,
    problems: &mut Problems,
) -> Option<(Document, Undecoded)> {
    if !value.is_object() {
        let got = if value.is_null() {
            "nothing".to_owned()
        } else {
            describe(value)
        };
        problems.push(
            "",
            format!(
                "the document must be an object with environment, flags and segments, got {got}"
            ),
        );
        return None;
    }
    let obj = Object::open(
        value,
        "",
        &["environment"],
        &["flags", "segments"],
        problems,
    )?;
    let environment = obj.string("environment", problems);
    if let Some(env) = &environment {
        crate::validate::check_key(env, "environment".to_owned(), problems);
    }
    let mut undecoded = Undecoded::default();
    let flags = obj.list("flags", problems).map(|items| {
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let flag = decode_flag(v, &keyed_path("flags", i, v), problems);
                if flag.is_none() {
                    undecoded
                        .flags
                        .extend(v.get("key").and_then(Value::as_str).map(str::to_owned));
                }
                flag
            })
            .collect::<Vec<_>>()
    });
    let segments = obj.list("segments", problems).map(|items| {
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let segment = decode_segment(v, &keyed_path("segments", i, v), problems);
                if segment.is_none() {
                    undecoded
                        .segments
                        .extend(v.get("key").and_then(Value::as_str).map(str::to_owned));
                }
                segment
            })
            .collect::<Vec<_>>()
    });
    let doc = Document {
        environment: environment.unwrap_or_default(),
        flags: flags.unwrap_or_default(),
        segments: segments.unwrap_or_default(),
    };
    Some((doc, undecoded))
}

pub(crate) fn decode_flag(value: &Value, path: &str, problems: &mut Problems) -> Option<Flag> {
    let obj = Object::open(
        value,
        path,
        &[
            "key",
            "kind",
            "variants",
            "off_variant",
            "enabled",
            "default",
        ],
        &[
            "description",
            "salt",
            "prerequisites",
            "rules",
            "tags",
            "owner",
            "temporary",
            "client_side",
            "version",
        ],
        problems,
    )?;
    let key = obj.string("key", problems);
    let description = obj.string("description", problems);
    let kind = obj.get("kind").and_then(|v| {
        let parsed = v.as_str().and_then(Kind::parse);
        if parsed.is_none() {
            problems.push(
                obj.field_path("kind"),
                format!(
                    "must be one of boolean, string, number, json, got {}",
                    describe(v)
                ),
            );
        }
        parsed
    });
    let variants = obj
        .get("variants")
        .and_then(|v| decode_variants(v, &obj.field_path("variants"), problems));
    let off_variant = obj.string("off_variant", problems);
    let enabled = obj.bool("enabled", problems);
    let salt = obj.string("salt", problems);
    let prerequisites = obj.list("prerequisites", problems).map(|items| {
        let path = obj.field_path("prerequisites");
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| decode_prerequisite(v, &format!("{path}[{i}]"), problems))
            .collect::<Vec<_>>()
    });
    let rules = obj.list("rules", problems).map(|items| {
        let path = obj.field_path("rules");
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| decode_rule(v, &format!("{path}[{i}]"), problems))
            .collect::<Vec<_>>()
    });
    let default = obj
        .get("default")
        .and_then(|v| decode_serve(v, &obj.field_path("default"), problems));
    let tags = obj.strings("tags", problems);
    let owner = obj.string("owner", problems);
    let temporary = obj.bool("temporary", problems);
    let client_side = obj.bool("client_side", problems);
    let version = obj.version(problems);
    Some(Flag {
        key: key?,
        description,
        kind: kind?,
        variants: variants?,
        off_variant: off_variant?,
        enabled: enabled?,
        salt,
        prerequisites: prerequisites.unwrap_or_default(),
        rules: rules.unwrap_or_default(),
        default: default?,
        tags: tags.unwrap_or_default(),
        owner,
        temporary: temporary.unwrap_or(false),
        client_side: client_side.unwrap_or(false),
        version,
    })
}

fn decode_variants(value: &Value, path: &str, problems: &mut Problems) -> Option<Variants> {
    let Value::Object(map) = value else {
        problems.push(
            path,
            format!("must be a map of variant to value, got {}", describe(value)),
        );
        return None;
    };
    // serde_json keeps insertion order (the `preserve_order` feature), so this is document order.
    Some(Variants(
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    ))
}

fn decode_prerequisite(value: &Value, path: &str, problems: &mut Problems) -> Option<Prerequisite> {
    let obj = Object::open(value, path, &["flag", "variants"], &[], problems)?;
    let flag = obj.string("flag", problems);
    let variants = obj.strings("variants", problems);
    Some(Prerequisite {
        flag: flag?,
        variants: variants?,
    })
}

fn decode_rule(value: &Value, path: &str, problems: &mut Problems) -> Option<Rule> {
    let obj = Object::open(value, path, &["id", "serve"], &["conditions"], problems)?;
    let id = obj.string("id", problems);
    let conditions = decode_conditions(&obj, problems);
    let serve = obj
        .get("serve")
        .and_then(|v| decode_serve(v, &obj.field_path("serve"), problems));
    Some(Rule {
        id: id?,
        conditions: conditions?,
        serve: serve?,
    })
}

fn decode_conditions(obj: &Object<'_>, problems: &mut Problems) -> Option<Vec<Condition>> {
    let Some(items) = obj.list("conditions", problems) else {
        // Absent is an empty list; a wrongly typed value was reported by `list`.
        return obj.get("conditions").is_none().then(Vec::new);
    };
    let path = obj.field_path("conditions");
    let decoded: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(i, v)| decode_condition(v, &format!("{path}[{i}]"), problems))
        .collect();
    decoded.into_iter().collect()
}

fn decode_condition(value: &Value, path: &str, problems: &mut Problems) -> Option<Condition> {
    let obj = Object::open(
        value,
        path,
        &["op"],
        &["attribute", "values", "negate"],
        problems,
    )?;
    let attribute = obj.string("attribute", problems);
    let op = obj.get("op").and_then(|v| {
        let parsed = v.as_str().and_then(Op::parse);
        if parsed.is_none() {
            let names: Vec<_> = Op::ALL.iter().map(|op| op.as_str()).collect();
            problems.push(
                obj.field_path("op"),
                format!("must be one of {}, got {}", names.join(", "), describe(v)),
            );
        }
        parsed
    });
    let values = match obj.get("values") {
        None => Some(Vec::new()),
        Some(_) => obj.list("values", problems).cloned(),
    };
    let negate = obj.bool("negate", problems);
    Some(Condition {
        attribute,
        op: op?,
        values: values?,
        negate: negate.unwrap_or(false),
    })
}

fn decode_serve(value: &Value, path: &str, problems: &mut Problems) -> Option<Serve> {
    let obj = Object::open(value, path, &[], &["variant", "split"], problems)?;
    match (obj.get("variant"), obj.get("split")) {
        (Some(_), None) => obj.string("variant", problems).map(Serve::Variant),
        (None, Some(split)) => {
            decode_split(split, &obj.field_path("split"), problems).map(Serve::Split)
        }
        _ => {
            problems.push(path, "must have exactly one of \"variant\" or \"split\"");
            None
        }
    }
}

fn decode_split(value: &Value, path: &str, problems: &mut Problems) -> Option<Split> {
    let obj = Object::open(value, path, &["weights"], &["bucket_by"], problems)?;
    let bucket_by = obj.string("bucket_by", problems);
    let weights = obj.list("weights", problems).map(|items| {
        let path = obj.field_path("weights");
        // Decode every weight before collecting, so each bad one is reported.
        let decoded: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, v)| decode_weight(v, &format!("{path}[{i}]"), problems))
            .collect();
        decoded.into_iter().collect::<Option<Vec<_>>>()
    });
    Some(Split {
        bucket_by: bucket_by.unwrap_or_else(|| "key".to_owned()),
        weights: weights??,
    })
}

fn decode_weight(value: &Value, path: &str, problems: &mut Problems) -> Option<Weight> {
    let obj = Object::open(value, path, &["variant", "weight"], &[], problems)?;
    let variant = obj.string("variant", problems);
    let weight = obj.get("weight").and_then(|v| {
        let path = obj.field_path("weight");
        let Some(n) = v.as_f64() else {
            problems.push(path, format!("must be a whole number, got {}", describe(v)));
            return None;
        };
        if n.fract() != 0.0 {
            problems.push(path, format!("{v} is not a whole number"));
            None
        } else if n < 0.0 {
            problems.push(path, format!("{v} is negative"));
            None
        } else if n > f64::from(BUCKETS) {
            problems.push(path, format!("{v} is over 100000 (100%)"));
            None
        } else {
            // In 0..=100000 and whole, so the conversion is exact.
            Some(n as u32)
        }
    });
    Some(Weight {
        variant: variant?,
        weight: weight?,
    })
}

pub(crate) fn decode_segment(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<Segment> {
    let obj = Object::open(
        value,
        path,
        &["key"],
        &["description", "included", "excluded", "rules", "version"],
        problems,
    )?;
    let key = obj.string("key", problems);
    let description = obj.string("description", problems);
    let included = obj.strings("included", problems);
    let excluded = obj.strings("excluded", problems);
    let rules = obj.list("rules", problems).map(|items| {
        let path = obj.field_path("rules");
        let decoded: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let path = format!("{path}[{i}]");
                let rule = Object::open(v, &path, &["conditions"], &[], problems)?;
                decode_conditions(&rule, problems).map(|conditions| SegmentRule { conditions })
            })
            .collect();
        decoded.into_iter().collect::<Option<Vec<_>>>()
    });
    let version = obj.version(problems);
    Some(Segment {
        key: key?,
        description,
        included: included.unwrap_or_default(),
        excluded: excluded.unwrap_or_default(),
        rules: rules.unwrap_or(Some(Vec::new()))?,
        version,
    })
}
