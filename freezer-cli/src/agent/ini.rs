//! The INI files freezer-agent reads: upstream's `--config` job file (every section but
//! `[storage:NAME]` holds options; each `[storage:NAME]` section is one storage) and oslo's
//! `--config-file` (options in `[DEFAULT]`).
//!
//! Read as Python's `configparser` reads them: `key = value` or `key: value`, keys folded to
//! lower case, `#` and `;` comment lines, indented lines continuing a value, `[DEFAULT]` values
//! inherited by every section, a repeated section or key an error. Upstream's value rule
//! follows: `True`/`true` is true, `False`/`false`/`None` is false.
//!
//! A value may be a password: no message here ever quotes a value or a line of the file.

use std::path::Path;

use serde_json::Value;

/// One section: its name and its `key → value` pairs, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// Keys (lower case) and values.
    pub entries: Vec<(String, String)>,
}

/// A parsed INI file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ini {
    /// Sections in file order, `[DEFAULT]` left out (its keys are in every other section).
    pub sections: Vec<Section>,
    /// The `[DEFAULT]` section's entries.
    pub defaults: Vec<(String, String)>,
}

impl Ini {
    /// Reads and parses `path`; errors name the file and the line number, never its text.
    pub fn read(path: &Path) -> Result<Ini, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "Configuration file {} not found or unreadable: {e}",
                path.display()
            )
        })?;
        Ini::parse(&text).map_err(|e| format!("Configuration file {}: {e}", path.display()))
    }

    /// Parses INI text.
    pub fn parse(text: &str) -> Result<Ini, String> {
        let mut ini = Ini::default();
        // Index into `sections`, or None for [DEFAULT]; before the first header: no section.
        let mut current: Option<Option<usize>> = None;
        let mut last_key: Option<(Option<usize>, usize)> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = raw.trim_end_matches('\r');
            let trimmed = line.trim();
            if trimmed.is_empty() {
                last_key = None;
                continue;
            }
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            let indented = line.starts_with(' ') || line.starts_with('\t');
            if indented && let Some((sec, idx)) = last_key {
                let entries = match sec {
                    None => &mut ini.defaults,
                    Some(i) => &mut ini.sections[i].entries,
                };
                let v = &mut entries[idx].1;
                if !v.is_empty() {
                    v.push('\n');
                }
                v.push_str(trimmed);
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                if name == "DEFAULT" {
                    current = Some(None);
                } else {
                    if ini.sections.iter().any(|s| s.name == name) {
                        return Err(format!("line {line_no}: section [{name}] appears twice"));
                    }
                    ini.sections.push(Section {
                        name: name.to_string(),
                        entries: Vec::new(),
                    });
                    current = Some(Some(ini.sections.len() - 1));
                }
                last_key = None;
                continue;
            }
            let Some(sec) = current else {
                return Err(format!(
                    "line {line_no}: an option before any [section] header"
                ));
            };
            let split = match (trimmed.find('='), trimmed.find(':')) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let (key, value) = match split {
                Some(at) => (trimmed[..at].trim(), trimmed[at + 1..].trim()),
                // configparser (allow_no_value off) refuses a line without a separator.
                None => {
                    return Err(format!(
                        "line {line_no}: not `key = value` (the line is not shown: it may hold a secret)"
                    ));
                }
            };
            if key.is_empty() {
                return Err(format!("line {line_no}: an empty option name"));
            }
            let key = key.to_ascii_lowercase();
            let entries = match sec {
                None => &mut ini.defaults,
                Some(i) => &mut ini.sections[i].entries,
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(format!(
                    "line {line_no}: option {key} appears twice in its section"
                ));
            }
            entries.push((key, value.to_string()));
            last_key = Some((sec, entries.len() - 1));
        }
        Ok(ini)
    }

    /// A section's entries with `[DEFAULT]`'s inherited (the section's own win).
    pub fn entries_of(&self, section: &Section) -> Vec<(String, String)> {
        let mut out = section.entries.clone();
        for (k, v) in &self.defaults {
            if !out.iter().any(|(key, _)| key == k) {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }
}

/// Upstream's reading of a job file value: `True`/`true` → true, `False`/`false`/`None` →
/// false, anything else the string.
pub fn upstream_value(v: &str) -> Value {
    match v {
        "True" | "true" => Value::Bool(true),
        "False" | "false" | "None" => Value::Bool(false),
        s => Value::String(s.to_string()),
    }
}

/// upstream's `--config` file: the options (every section but `[storage:*]`, later sections
/// winning) and the storages, one map per `[storage:NAME]` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFile {
    /// Options by key (`-` written `_`), upstream's value rule applied.
    pub options: Vec<(String, Value)>,
    /// One map per `[storage:NAME]` section: its name and its options.
    pub storages: Vec<(String, Vec<(String, Value)>)>,
}

impl JobFile {
    /// Reads upstream's `--config` job file.
    pub fn read(path: &Path) -> Result<JobFile, String> {
        Ok(JobFile::from_ini(&Ini::read(path)?))
    }

    /// The job file's reading of a parsed INI.
    pub fn from_ini(ini: &Ini) -> JobFile {
        let mut jf = JobFile::default();
        let convert = |entries: Vec<(String, String)>| {
            entries
                .into_iter()
                .map(|(k, v)| (k.replace('-', "_"), upstream_value(&v)))
                .collect::<Vec<_>>()
        };
        if ini.sections.is_empty() {
            jf.options = convert(ini.defaults.clone());
        }
        for s in &ini.sections {
            let entries = convert(ini.entries_of(s));
            if s.name.starts_with("storage:") {
                jf.storages.push((s.name.clone(), entries));
            } else {
                for (k, v) in entries {
                    jf.options.retain(|(key, _)| *key != k);
                    jf.options.push((k, v));
                }
            }
        }
        jf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_defaults_and_continuations() {
        let ini = Ini::parse(
            "# a comment\n[DEFAULT]\nmode = fs\n[job]\nBackup_Name: web\nexclude = a\n  b\n; x\n[storage:one]\nstorage=local\ncontainer = /a\n",
        )
        .unwrap();
        assert_eq!(ini.sections.len(), 2);
        let jf = JobFile::from_ini(&ini);
        assert!(
            jf.options
                .contains(&("backup_name".into(), Value::from("web")))
        );
        assert!(
            jf.options
                .contains(&("exclude".into(), Value::from("a\nb")))
        );
        assert!(jf.options.contains(&("mode".into(), Value::from("fs"))));
        assert_eq!(jf.storages[0].0, "storage:one");
        assert!(
            jf.storages[0]
                .1
                .contains(&("container".into(), Value::from("/a")))
        );
    }

    #[test]
    fn errors_never_quote_the_file() {
        for text in [
            "ssh_password = hunter2\n",
            "[a]\nhunter2\n",
            "[a]\nssh_password = hunter2\nssh_password = hunter2\n",
        ] {
            let e = Ini::parse(text).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("line "), "{e}");
        }
    }

    #[test]
    fn upstream_booleans() {
        assert_eq!(upstream_value("True"), Value::Bool(true));
        assert_eq!(upstream_value("None"), Value::Bool(false));
        assert_eq!(upstream_value("no"), Value::from("no"));
    }
}
