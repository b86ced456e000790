//! Config and secret lookup for guests: the env first, then a file in a mounted volume.
//!
//! A Kubernetes pod hands a function its settings two ways: as env vars (`env`, `envFrom`
//! a configMap or secret) or as files (a `configMap` / `secret` volume). [`config`] and
//! [`secret`] look in both so the author need not care which the manifest chose:
//!
//! 1. the env var named exactly `name`;
//! 2. the env var in upper snake case (`db.host` and `db-host` → `DB_HOST`);
//! 3. the file `name` under the mount directory: `$SKIFF_CONFIG_DIR` (default `/config`)
//!    for config, `$SKIFF_SECRETS_DIR` (default `/secrets`) for secrets. The guest only
//!    sees that directory if the pod mounts a volume there.
//!
//! File contents have one trailing newline removed (editors and `kubectl create configmap
//! --from-file` add one). Secrets come back as [`Secret`], whose `Debug` never prints the value.

use std::fmt;
use std::path::{Path, PathBuf};

/// Default mount path for config files when `SKIFF_CONFIG_DIR` is not set.
pub const DEFAULT_CONFIG_DIR: &str = "/config";
/// Default mount path for secret files when `SKIFF_SECRETS_DIR` is not set.
pub const DEFAULT_SECRETS_DIR: &str = "/secrets";

/// Looks up a config value by name (env var, then `$SKIFF_CONFIG_DIR/<name>`).
pub fn config(name: &str) -> Option<String> {
    let dir = mount_dir("SKIFF_CONFIG_DIR", DEFAULT_CONFIG_DIR);
    lookup(name, |k| std::env::var(k).ok(), &dir)
}

/// Looks up a secret by name (env var, then `$SKIFF_SECRETS_DIR/<name>`).
pub fn secret(name: &str) -> Option<Secret> {
    let dir = mount_dir("SKIFF_SECRETS_DIR", DEFAULT_SECRETS_DIR);
    lookup(name, |k| std::env::var(k).ok(), &dir).map(Secret)
}

/// A secret value; `Debug` and `Display` print `<redacted>` so it does not leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's value. Named so that every use is visible in review.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn mount_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// The lookup order of this module, with the env and the directory passed in (testable).
pub fn lookup(name: &str, env: impl Fn(&str) -> Option<String>, dir: &Path) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    if let Some(v) = env(name) {
        return Some(v);
    }
    let snake = env_name(name);
    if snake != name
        && let Some(v) = env(&snake)
    {
        return Some(v);
    }
    // A name with a path separator or `..` would escape the mount directory.
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return None;
    }
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    Some(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// `db.host` / `db-host` / `dbHost`-free conversion: upper case, `.` and `-` become `_`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_exact_name_wins_over_snake_case_and_file() {
        let dir = std::env::temp_dir().join("skiff-sdk-no-such-dir");
        let e = env(&[("db.host", "exact"), ("DB_HOST", "snake")]);
        assert_eq!(lookup("db.host", &e, &dir).as_deref(), Some("exact"));
        let e = env(&[("DB_HOST", "snake")]);
        assert_eq!(lookup("db.host", &e, &dir).as_deref(), Some("snake"));
    }

    #[test]
    fn falls_back_to_file_and_trims_one_newline() {
        let dir = std::env::temp_dir().join(format!("skiff-sdk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::write(dir.join("greeting"), "hi\n\n").expect("write file");
        assert_eq!(lookup("greeting", env(&[]), &dir).as_deref(), Some("hi\n"));
        assert_eq!(lookup("missing", env(&[]), &dir), None);
        assert_eq!(lookup("../greeting", env(&[]), &dir), None, "no escaping the mount");
        assert_eq!(lookup("", env(&[]), &dir), None);
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret("hunter2".to_owned());
        assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn env_name_is_upper_snake() {
        assert_eq!(env_name("db.host-name"), "DB_HOST_NAME");
    }
}
