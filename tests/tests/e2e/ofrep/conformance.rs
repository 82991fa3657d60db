//! The conformance vectors (DESIGN.md section 8) evaluated over OFREP: every case gives the
//! vector's value, variant and reason (in OpenFeature's terms), so OFREP and the SDK agree.
//! Runs the vendored vectors and, when set, those of `FLAGSTAFF_CONFORMANCE_DIR`.

use std::path::{Path, PathBuf};

use flagstaff_engine::document_from_value;
use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{token, Http};

fn vector_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// JSON equality with numbers compared by value (`0` equals `0.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The OFREP request body of a vector's context `{key, attributes}`.
fn ofrep_context(context: &Value) -> Value {
    let mut members = serde_json::Map::new();
    if let Some(key) = context.get("key").filter(|k| !k.is_null()) {
        members.insert("targetingKey".into(), key.clone());
    }
    if let Some(Value::Object(attributes)) = context.get("attributes") {
        for (name, value) in attributes {
            members.insert(name.clone(), value.clone());
        }
    }
    json!({ "context": members })
}

/// Whether `value` has the JSON type of a flag of `kind`.
fn has_kind(value: &Value, kind: &str) -> bool {
    match kind {
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        _ => true,
    }
}

/// Why an OFREP answer differs from the case's expectation, if it does.
fn check(
    case: &Value,
    kinds: &serde_json::Map<String, Value>,
    status: StatusCode,
    body: &Value,
) -> Result<(), String> {
    let expect = &case["expect"];
    let reason = &expect["reason"];
    let error = reason["error"].as_str();
    if error == Some("FLAG_NOT_FOUND") {
        return if status == StatusCode::NOT_FOUND && body["errorCode"] == "FLAG_NOT_FOUND" {
            Ok(())
        } else {
            Err(format!("expected 404 FLAG_NOT_FOUND, got {status} {body}"))
        };
    }
    if status != StatusCode::OK {
        return Err(format!("expected 200, got {status} {body}"));
    }
    let flag = case["flag"].as_str().unwrap_or_default();
    if error == Some("TYPE_MISMATCH") {
        // The typed call asked for another type; OFREP serves the flag's own value.
        let kind = kinds.get(flag).and_then(Value::as_str).unwrap_or_default();
        return if has_kind(&body["value"], kind) {
            Ok(())
        } else {
            Err(format!(
                "the value {} is not of the flag's kind {kind}",
                body["value"]
            ))
        };
    }
    let bucket = expect.get("bucket").filter(|b| !b.is_null());
    let metadata = &body["metadata"];
    let (ofrep_reason, extra): (&str, Option<(&str, &Value)>) = match reason["kind"].as_str() {
        Some("OFF") => ("DISABLED", None),
        Some("RULE_MATCH") => (
            if bucket.is_some() {
                "SPLIT"
            } else {
                "TARGETING_MATCH"
            },
            Some(("ruleId", &reason["rule_id"])),
        ),
        Some("DEFAULT") => (if bucket.is_some() { "SPLIT" } else { "DEFAULT" }, None),
        Some("PREREQUISITE_FAILED") => (
            "TARGETING_MATCH",
            Some(("prerequisite", &reason["prerequisite"])),
        ),
        Some("ERROR") => ("ERROR", Some(("errorCode", &reason["error"]))),
        other => return Err(format!("unknown reason kind {other:?}")),
    };
    let mut wrong = Vec::new();
    if !same(&body["value"], &expect["value"]) {
        wrong.push(format!(
            "value {} (expected {})",
            body["value"], expect["value"]
        ));
    }
    if body["variant"] != expect["variant"] {
        wrong.push(format!(
            "variant {} (expected {})",
            body["variant"], expect["variant"]
        ));
    }
    if body["reason"] != ofrep_reason {
        wrong.push(format!(
            "reason {} (expected {ofrep_reason})",
            body["reason"]
        ));
    }
    if let Some((name, value)) = extra {
        if &metadata[name] != value {
            wrong.push(format!(
                "metadata.{name} {} (expected {value})",
                metadata[name]
            ));
        }
    }
    if metadata.get("bucket") != bucket {
        wrong.push(format!(
            "metadata.bucket {:?} (expected {bucket:?})",
            metadata.get("bucket")
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

/// The segments of a vector file as the Admin API accepts them: a key listed twice in a
/// segment (which evaluation reads as once, and a write refuses) listed once.
fn without_duplicate_keys(segments: Option<&Value>) -> Value {
    let mut segments = segments.cloned().unwrap_or(json!([]));
    for segment in segments.as_array_mut().into_iter().flatten() {
        for list in ["included", "excluded"] {
            if let Some(Value::Array(keys)) = segment.get_mut(list) {
                let mut seen = std::collections::HashSet::new();
                keys.retain(|k| seen.insert(k.to_string()));
            }
        }
    }
    segments
}

/// Runs every case file of `dir` through OFREP; returns how many cases ran.
async fn run(dir: &Path) -> usize {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let http = Http::new(&server);
    let mut cases = 0;
    let mut failures = Vec::new();
    for (n, path) in vector_files(dir).iter().enumerate() {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let file: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("readable"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(file_cases) = file.get("cases").and_then(Value::as_array) else {
            continue; // bucketing vectors: no evaluation
        };
        let environment = format!("vectors-{n}");
        admin
            .create_environment(pb::CreateEnvironmentRequest {
                environment: environment.clone(),
                ..Default::default()
            })
            .await
            .expect("environment");
        let document = document_from_value(&json!({
            "environment": environment,
            "flags": file["flags"],
            "segments": without_duplicate_keys(file.get("segments")),
        }))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        admin
            .apply(pb::ApplyRequest {
                environment: environment.clone(),
                source: Some(pb::apply_request::Source::Document(pb::Document::from(
                    &document,
                ))),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let kinds: serde_json::Map<String, Value> = file["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .map(|f| {
                (
                    f["key"].as_str().unwrap_or_default().to_owned(),
                    f["kind"].clone(),
                )
            })
            .collect();
        let sdk = token(&server, &format!("sdk-{n}"), pb::Role::Sdk, &environment).await;
        for case in file_cases {
            cases += 1;
            let flag = case["flag"].as_str().expect("flag");
            let path = format!("/ofrep/v1/evaluate/flags/{flag}");
            let answer = http
                .post(&path, Some(&sdk), &ofrep_context(&case["context"]))
                .await;
            if let Err(why) = check(case, &kinds, answer.status, &answer.body) {
                failures.push(format!(
                    "{name}: {}: {why}",
                    case["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ over OFREP:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases
}

#[tokio::test]
async fn every_vendored_vector_evaluates_alike_over_ofrep() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    // As many as the engine's conformance test runs.
    assert_eq!(run(&dir).await, 1627);
}

#[tokio::test]
async fn vectors_of_flagstaff_conformance_dir_evaluate_alike_over_ofrep() {
    let Some(dir) = std::env::var_os("FLAGSTAFF_CONFORMANCE_DIR") else {
        return;
    };
    assert!(
        run(Path::new(&dir)).await > 0,
        "no cases in FLAGSTAFF_CONFORMANCE_DIR"
    );
}
