//! The console's users file (`--console-users`), for single sign-on through an authenticating
//! proxy (DESIGN.md section 11, docs/console.md): who may use the console, with which role,
//! and an editor's environments. YAML, one entry a person:
//!
//! ```yaml
//! alice@example.com: {role: admin}
//! bob@example.com: {role: editor, environments: [production, staging]}
//! ```
//!
//! Names compare without regard to case. The file is read again when it changes (looked at
//! at most once a second, when a console request comes); a file that no longer reads leaves
//! the last good one in force and says what is wrong in the log.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::error::ServerError;
use crate::storage::{now_ms, Role};

/// Largest users file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Most people one users file lists.
pub const MAX_PEOPLE: usize = 10_000;

/// Most environments one editor is given.
pub const MAX_ENVIRONMENTS: usize = 100;

/// Longest name of a person, in bytes (an email address has at most 254).
pub const MAX_NAME_BYTES: usize = 254;

/// How often, at most, the file is looked at for a change.
const CHECK_EVERY_MS: u64 = 1000;

/// What one person may do in the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// `admin` or `editor`.
    pub role: Role,
    /// The environments an editor may see and change; empty for an admin, who sees all.
    pub environments: Vec<String>,
}

/// The people of a users file, by name in lower case.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct People(HashMap<String, Person>);

impl People {
    /// The person `name` names (in any case), with their name as the console shows it (in
    /// lower case), if the file lists them.
    pub fn find(&self, name: &str) -> Option<(&str, &Person)> {
        self.0
            .get_key_value(&name.to_lowercase())
            .map(|(name, person)| (name.as_str(), person))
    }

    /// How many people are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// One entry of the file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    role: String,
    #[serde(default)]
    environments: Vec<String>,
}

/// The entries of a file in the order written, duplicates kept (a map would keep the last
/// of two entries of one person without a word).
struct Entries(Vec<(String, Entry)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Entries, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of people to their role")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Entry>()? {
                    if entries.len() == MAX_PEOPLE {
                        return Err(serde::de::Error::custom(format!(
                            "it lists more than the {MAX_PEOPLE} people a users file may"
                        )));
                    }
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The people of a users file's `text`, or what is wrong with it, naming the person.
pub fn parse(text: &str) -> Result<People, String> {
    let entries: Option<Entries> = serde_yaml_ng::from_str(text).map_err(|e| {
        format!(
            "{e} (write one entry a person, e.g. `alice@example.com: {{role: admin}}` or \
             `bob@example.com: {{role: editor, environments: [production]}}`)"
        )
    })?;
    let entries = entries.map(|Entries(entries)| entries).unwrap_or_default();
    if entries.is_empty() {
        return Err("it lists no one: list at least one person".to_owned());
    }
    let mut people = HashMap::with_capacity(entries.len());
    for (name, entry) in entries {
        check_name(&name)?;
        let key = name.to_lowercase();
        if people.contains_key(&key) {
            return Err(format!(
                "{name:?} is listed twice (names are compared without regard to case)"
            ));
        }
        people.insert(key, person(&name, entry)?);
    }
    Ok(People(people))
}

/// Whether `name` can name a person: 1 to 254 bytes, no spaces or control characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{name:?} is not a person's name: give 1 to {MAX_NAME_BYTES} bytes, such as an email \
             address"
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{name:?} is not a person's name: it holds a space or a control character"
        ));
    }
    Ok(())
}

/// The person `name`'s `entry` allows.
fn person(name: &str, entry: Entry) -> Result<Person, String> {
    let role = match entry.role.as_str() {
        "admin" => Role::Admin,
        "editor" => Role::Editor,
        "sdk" | "client" => {
            return Err(format!(
                "{name}: the role {:?} cannot use the console; give admin or editor",
                entry.role
            ))
        }
        other => {
            return Err(format!(
                "{name}: unknown role {other:?}; give admin or editor"
            ))
        }
    };
    match role {
        Role::Admin if !entry.environments.is_empty() => {
            return Err(format!(
                "{name}: an admin sees every environment; environments are for editors"
            ))
        }
        Role::Editor if entry.environments.is_empty() => {
            return Err(format!(
                "{name}: an editor needs environments, e.g. {{role: editor, environments: \
                 [production]}}"
            ))
        }
        _ => {}
    }
    if entry.environments.len() > MAX_ENVIRONMENTS {
        return Err(format!(
            "{name}: {} environments, more than the {MAX_ENVIRONMENTS} one person may be given",
            entry.environments.len()
        ));
    }
    if let Some(bad) = entry
        .environments
        .iter()
        .find(|e| !flagstaff_engine::is_valid_key(e))
    {
        return Err(format!(
            "{name}: {bad:?} is not an environment key (lower-case letters, digits, '-', '_' \
             and '.')"
        ));
    }
    let mut environments = entry.environments;
    environments.sort();
    environments.dedup();
    Ok(Person { role, environments })
}

/// When the file was last changed, as far as can be told without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    /// What a file that cannot be looked at is stamped with.
    const MISSING: Stamp = Stamp {
        modified: None,
        len: 0,
    };

    fn of(metadata: &std::fs::Metadata) -> Stamp {
        Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
        }
    }
}

/// The people in force, and the file they were read from (or failed to be).
#[derive(Debug)]
struct Loaded {
    people: Arc<People>,
    stamp: Stamp,
}

/// The users file, read again when it changes.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    loaded: ArcSwap<Loaded>,
    /// When the file was last looked at, in Unix milliseconds.
    checked_ms: AtomicU64,
}

impl Users {
    /// The users file at `path`, read now: an error says what is wrong with it.
    pub fn load(path: &Path) -> Result<Users, ServerError> {
        let (stamp, people) = read(path).map_err(ServerError::Invalid)?;
        Ok(Users {
            path: path.to_owned(),
            loaded: ArcSwap::from_pointee(Loaded {
                people: Arc::new(people),
                stamp,
            }),
            checked_ms: AtomicU64::new(now_ms()),
        })
    }

    /// The people in force; the file is first read again if it changed and was not looked at
    /// in the last second.
    pub async fn people(&self) -> Arc<People> {
        let now = now_ms();
        let checked = self.checked_ms.load(Ordering::Relaxed);
        // One request looks; the others go on with what is in force.
        if now.saturating_sub(checked) >= CHECK_EVERY_MS
            && self
                .checked_ms
                .compare_exchange(checked, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let (path, current) = (self.path.clone(), self.loaded.load_full());
            if let Ok(Some(loaded)) =
                tokio::task::spawn_blocking(move || reread(&path, &current)).await
            {
                self.loaded.store(Arc::new(loaded));
            }
        }
        self.loaded.load().people.clone()
    }
}

/// The file at `path` read again, if it changed since `current` was read.
fn reread(path: &Path, current: &Loaded) -> Option<Loaded> {
    let stamp = std::fs::metadata(path)
        .map(|m| Stamp::of(&m))
        .unwrap_or(Stamp::MISSING);
    if stamp == current.stamp {
        return None;
    }
    Some(match read(path) {
        Ok((stamp, people)) => {
            tracing::info!(
                path = %path.display(),
                people = people.len(),
                "the console's users file changed and was read again"
            );
            Loaded {
                people: Arc::new(people),
                stamp,
            }
        }
        Err(why) => {
            // Said once a change: the stamp is kept with the people last in force.
            tracing::error!("{why}; the people it last listed stay in force");
            Loaded {
                people: current.people.clone(),
                stamp,
            }
        }
    })
}

/// The file at `path`, read and parsed, with its stamp; an error names the file.
fn read(path: &Path) -> Result<(Stamp, People), String> {
    let what = format!("the console's users file {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {what}: {e}"))?;
    let stamp = file
        .metadata()
        .map(|m| Stamp::of(&m))
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if stamp.len > MAX_FILE_BYTES {
        return Err(format!(
            "{what} is {} bytes, more than the {MAX_FILE_BYTES} a users file may be",
            stamp.len
        ));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{what} is more than the {MAX_FILE_BYTES} bytes a users file may be"
        ));
    }
    let people = parse(&text).map_err(|why| format!("{what}: {why}"))?;
    Ok((stamp, people))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_and_editors_are_read_with_their_environments() {
        let people = parse(
            "alice@example.com: {role: admin}\n\
             Bob@Example.com:\n  role: editor\n  environments: [staging, production]\n",
        )
        .expect("a users file");
        assert_eq!(people.len(), 2);
        let (name, alice) = people.find("ALICE@example.com").expect("alice");
        assert_eq!(name, "alice@example.com");
        assert_eq!(alice.role, Role::Admin);
        assert!(alice.environments.is_empty());
        let (name, bob) = people.find("bob@example.com").expect("bob");
        assert_eq!(name, "bob@example.com");
        assert_eq!(bob.role, Role::Editor);
        assert_eq!(bob.environments, ["production", "staging"]);
        assert!(people.find("carol@example.com").is_none());
    }

    fn refused(text: &str) -> String {
        parse(text).expect_err(text)
    }

    #[test]
    fn bad_files_are_refused_saying_what_is_wrong() {
        for (text, said) in [
            ("", "lists no one"),
            ("{}", "lists no one"),
            ("- alice@example.com", "one entry a person"),
            ("alice@example.com: admin", "one entry a person"),
            ("alice@example.com: {role: owner}", "unknown role \"owner\""),
            ("alice@example.com: {role: sdk}", "cannot use the console"),
            ("alice@example.com: {}", "role"),
            (
                "alice@example.com: {role: admin, team: x}",
                "unknown field `team`",
            ),
            (
                "alice@example.com: {role: editor}",
                "an editor needs environments",
            ),
            (
                "alice@example.com: {role: editor, environments: []}",
                "an editor needs environments",
            ),
            (
                "alice@example.com: {role: admin, environments: [production]}",
                "environments are for editors",
            ),
            (
                "alice@example.com: {role: editor, environments: [Production]}",
                "\"Production\" is not an environment key",
            ),
            (
                "alice@example.com: {role: admin}\nALICE@example.com: {role: admin}",
                "listed twice",
            ),
            (
                "alice@example.com: {role: admin}\nalice@example.com: {role: editor}",
                "listed twice",
            ),
            ("'alice smith': {role: admin}", "holds a space"),
            ("'': {role: admin}", "not a person's name"),
        ] {
            let why = refused(text);
            assert!(why.contains(said), "{text:?}: {why}");
        }
    }

    #[test]
    fn sizes_have_limits() {
        let long = format!(
            "{}@example.com: {{role: admin}}",
            "a".repeat(MAX_NAME_BYTES)
        );
        assert!(refused(&long).contains("not a person's name"));

        let many: String = (0..=MAX_PEOPLE)
            .map(|i| format!("p{i}@example.com: {{role: admin}}\n"))
            .collect();
        assert!(refused(&many).contains("more than the 10000"));

        let environments: Vec<String> = (0..=MAX_ENVIRONMENTS).map(|i| format!("e{i}")).collect();
        let wide = format!(
            "bob@example.com: {{role: editor, environments: [{}]}}",
            environments.join(", ")
        );
        assert!(refused(&wide).contains("more than the 100"));
    }

    #[test]
    fn a_file_is_read_naming_it_when_wrong_and_not_when_too_large() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("users.yaml");
        let missing = Users::load(&path).expect_err("no file");
        assert!(missing.to_string().contains("users.yaml"), "{missing}");
        std::fs::write(&path, "alice@example.com: {role: owner}").expect("write");
        let wrong = Users::load(&path).expect_err("a bad role");
        assert!(wrong.to_string().contains("users.yaml"), "{wrong}");
        assert!(wrong.to_string().contains("unknown role"), "{wrong}");
        let huge = "#".repeat(usize::try_from(MAX_FILE_BYTES).unwrap() + 1);
        std::fs::write(&path, huge).expect("write");
        let large = Users::load(&path).expect_err("too large");
        assert!(large.to_string().contains("more than the"), "{large}");
    }

    #[tokio::test]
    async fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("users.yaml");
        std::fs::write(&path, "alice@example.com: {role: admin}\n").expect("write");
        let users = Users::load(&path).expect("a users file");
        assert!(users.people().await.find("alice@example.com").is_some());

        std::fs::write(
            &path,
            "bob@example.com: {role: editor, environments: [production]}\n",
        )
        .expect("write");
        // Looked at again once a second has passed since the last look.
        users.checked_ms.store(0, Ordering::Relaxed);
        let people = users.people().await;
        assert!(people.find("alice@example.com").is_none());
        assert!(people.find("bob@example.com").is_some());

        std::fs::write(&path, "bob@example.com: {role: owner}\n").expect("write");
        users.checked_ms.store(0, Ordering::Relaxed);
        assert!(
            users.people().await.find("bob@example.com").is_some(),
            "the last good file stays in force"
        );

        std::fs::remove_file(&path).expect("remove");
        users.checked_ms.store(0, Ordering::Relaxed);
        assert!(users.people().await.find("bob@example.com").is_some());
    }
}
