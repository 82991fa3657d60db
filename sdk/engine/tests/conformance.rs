//! The conformance vectors (DESIGN.md section 8), run through the production path:
//! document → validation → compiled snapshot → evaluation.

use std::path::{Path, PathBuf};

use flagstaff_engine::{document_from_value, Context, Detail, Snapshot};
use serde_json::{json, Value};

/// Cases in the vendored files; a file silently skipped would change it.
const VENDORED_CASES: usize = 1627;
const VENDORED_BUCKETING_VECTORS: usize = 69;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Counts of what ran, and the failures by file and case name.
#[derive(Default)]
struct Run {
    cases: usize,
    bucketing: usize,
    failures: Vec<String>,
}

impl Run {
    fn file(&mut self, path: &Path) {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path).expect("readable vector file");
        let file: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(vectors) = file.get("vectors").and_then(Value::as_array) {
            self.bucketing_file(&name, vectors);
        } else {
            self.cases_file(&name, &file);
        }
    }

    fn bucketing_file(&mut self, name: &str, vectors: &[Value]) {
        for v in vectors {
            let salt = v["salt"].as_str().expect("salt");
            let value = v["value"].as_str().expect("value");
            let input = format!("{salt}.{value}");
            let hash = flagstaff_engine::__internal::murmur3_x86_32(input.as_bytes(), 0);
            let bucket = flagstaff_engine::bucket(salt, value);
            if Some(u64::from(hash)) != v["hash"].as_u64()
                || Some(u64::from(bucket)) != v["bucket"].as_u64()
            {
                self.failures.push(format!(
                    "{name}: {salt:?} + {value:?}: got hash {hash} bucket {bucket}, expected {} {}",
                    v["hash"], v["bucket"]
                ));
            }
            self.bucketing += 1;
        }
    }

    fn cases_file(&mut self, name: &str, file: &Value) {
        let doc = json!({
            "environment": "conformance",
            "flags": file["flags"],
            "segments": file.get("segments").cloned().unwrap_or(json!([])),
        });
        let snapshot = match document_from_value(&doc).and_then(Snapshot::from_document) {
            Ok(s) => s,
            Err(e) => {
                self.failures
                    .push(format!("{name}: the document does not validate:\n{e}"));
                return;
            }
        };
        for case in file["cases"].as_array().expect("cases") {
            self.cases += 1;
            let case_name = case["name"].as_str().unwrap_or("?");
            if let Err(why) = check_case(&snapshot, case) {
                self.failures.push(format!("{name}: {case_name}: {why}"));
            }
        }
    }
}

fn detail_json<T: Into<Value>>(d: Detail<'_, T>) -> Value {
    let mut out = json!({
        "value": d.value.into(),
        "variant": d.variant,
        "reason": d.reason,
    });
    if let Some(bucket) = d.bucket {
        out["bucket"] = json!(bucket);
    }
    out
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

fn check_case(snapshot: &Snapshot, case: &Value) -> Result<(), String> {
    let ctx = Context::from_json(&case["context"])?;
    let flag = case["flag"].as_str().ok_or("no flag")?;
    let default = &case["default"];
    let got = match case["type"].as_str() {
        Some("bool") => {
            detail_json(snapshot.bool_detail(flag, &ctx, default.as_bool().ok_or("bool default")?))
        }
        Some("string") => detail_json(snapshot.string_detail(
            flag,
            &ctx,
            default.as_str().ok_or("string default")?,
        )),
        Some("number") => detail_json(snapshot.number_detail(
            flag,
            &ctx,
            default.as_f64().ok_or("number default")?,
        )),
        Some("json") => {
            let d = snapshot.json_detail(flag, &ctx, default);
            detail_json(Detail {
                value: d.value.clone(),
                variant: d.variant,
                reason: d.reason,
                version: d.version,
                bucket: d.bucket,
            })
        }
        other => return Err(format!("unknown case type {other:?}")),
    };
    if same(&got, &case["expect"]) {
        Ok(())
    } else {
        Err(format!("expected {}, got {got}", case["expect"]))
    }
}

fn finish(run: &Run) {
    assert!(
        run.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        run.failures.len(),
        run.cases + run.bucketing,
        run.failures.join("\n")
    );
}

#[test]
fn vendored_vectors_all_pass() {
    let mut run = Run::default();
    for file in json_files(&project_root().join("conformance")) {
        run.file(&file);
    }
    finish(&run);
    assert_eq!(run.cases, VENDORED_CASES, "evaluation cases run");
    assert_eq!(
        run.bucketing, VENDORED_BUCKETING_VECTORS,
        "bucketing vectors run"
    );
}

#[test]
fn vectors_in_flagstaff_conformance_dir_pass() {
    let Some(dir) = std::env::var_os("FLAGSTAFF_CONFORMANCE_DIR") else {
        return;
    };
    let mut run = Run::default();
    for file in json_files(Path::new(&dir)) {
        run.file(&file);
    }
    finish(&run);
    assert!(
        run.cases + run.bucketing > 0,
        "FLAGSTAFF_CONFORMANCE_DIR={} holds no vector",
        Path::new(&dir).display()
    );
    eprintln!(
        "FLAGSTAFF_CONFORMANCE_DIR: {} cases, {} bucketing vectors passed",
        run.cases, run.bucketing
    );
}

#[test]
fn vendored_copy_is_identical_to_shared() {
    let shared = project_root().join("../shared/conformance");
    if !shared.is_dir() {
        return;
    }
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("readable directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let vendored = project_root().join("conformance");
    assert_eq!(names(&vendored), names(&shared), "file lists differ");
    for name in names(&shared) {
        let a = std::fs::read(vendored.join(&name)).expect("vendored file");
        let b = std::fs::read(shared.join(&name)).expect("shared file");
        assert!(
            a == b,
            "conformance/{name} differs from ../shared/conformance/{name}"
        );
    }
}
