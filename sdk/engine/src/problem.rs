//! Validation problems: a path into the document and a plain sentence.

use std::fmt;

/// One thing wrong with a document, e.g.
/// `flags[checkout-v2].rules[1].serve.split.weights: sum is 99000, must be 100000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document: `flags[KEY].rules[INDEX].conditions[INDEX].values[INDEX]`.
    pub path: String,
    /// What is wrong, as a sentence without a trailing period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a document; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    problems: Vec<Problem>,
}

impl ValidationError {
    pub(crate) fn new(problems: Vec<Problem>) -> ValidationError {
        debug_assert!(!problems.is_empty());
        ValidationError { problems }
    }

    /// Builds an error of one problem.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError::new(vec![Problem {
            path: path.into(),
            message: message.into(),
        }])
    }

    /// The problems: those of each document alone in document order, then those across
    /// documents (references, prerequisite cycles and chains).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The problems as lines of `path: message`.
    pub fn messages(&self) -> Vec<String> {
        self.problems.iter().map(Problem::to_string).collect()
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Most problems kept for one document set; the rest are counted.
const MAX_PROBLEMS: usize = 1_000;

/// Collects problems while a document is checked: the first [`MAX_PROBLEMS`], and how many
/// more there were, so a document of a million mistakes costs no more than a thousand.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>, usize);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.0.len() >= MAX_PROBLEMS {
            self.1 += 1;
            return;
        }
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// How many problems were found so far.
    pub(crate) fn len(&self) -> usize {
        self.0.len() + self.1
    }

    pub(crate) fn into_result(mut self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            return Ok(());
        }
        if self.1 > 0 {
            self.0.push(Problem {
                path: String::new(),
                message: format!("and {} more problems", self.1),
            });
        }
        Err(ValidationError::new(self.0))
    }
}

/// The path of a keyed list's element, `flags[KEY]`, with at most the first bytes of a long
/// key.
pub(crate) fn keyed(list: &str, key: &str) -> String {
    format!("{list}[{}]", crate::limits::clip(key))
}

/// Describes a JSON value for messages: `string "yes"`, `number 5`, `a list`.
pub(crate) fn describe(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", crate::limits::quote(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}
