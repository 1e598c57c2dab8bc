//! Option names: which names of a job document this release knows, and what an unknown one
//! is told.
//!
//! A misspelt option is never dropped quietly: `encrypt_pas_file` would back up in plaintext.
//! Every name of a `freezer_action`, of a job action and of a job document is read, knowingly
//! ignored (upstream's options that do not apply here, listed below and in docs/COMPAT.md), or
//! unknown. An unknown name is an error naming the closest known one, unless the caller allows
//! unknown names (a document written for a newer release); then each is a warning.
//!
//! Nothing here formats an option's value: any option may hold a secret.

use serde::Deserialize;

use super::options::FreezerAction;
use super::storage::StorageSpec;
use crate::error::{Error, Result};

/// `freezer_action` options read into typed fields of [`FreezerAction`].
const TYPED: &[&str] = &[
    "action",
    "mode",
    "path_to_backup",
    "backup_name",
    "hostname",
    "container",
    "storage",
    "access_key",
    "secret_key",
    "endpoint",
    "upload_limit",
    "download_limit",
    "storages",
    "restore_abs_path",
    "restore_from_date",
    "snapshot_id",
    "sub_path",
    "overwrite",
    "exclude",
    "encrypt_pass_file",
    "compression",
    "dereference_symlink",
    "dry_run",
    "one_file_system",
    "incremental",
    "no_incremental",
    "max_level",
    "always_level",
    "restart_always_level",
    "remove_older_than",
    "remove_from_date",
    "remove_before_date",
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
    "consistency_check",
    "consistency_checksum",
    "read_data",
    "max_unused",
    "allow_unknown_options",
    "newest_readable",
    "command",
    "restore_command",
    "shell",
    "metadata_out",
    "threads",
    "max_memory",
];

/// Upstream's options that do not apply to this release, accepted and ignored: the rest of
/// freezer-agent's options (`freezer/common/config.py`: `_COMMON` by `dest`, `DEFAULT_PARAMS`,
/// deprecated names), the oslo.log options a job's INI section may set, the scheduler's
/// `[service_auth]` options (Swift's credentials come from `OS_*` in the environment), and
/// keys freezer-web-ui and freezer-api put in a `freezer_action`. docs/COMPAT.md says why each
/// group does not apply.
const IGNORED_UPSTREAM: &[&str] = &[
    // The engine (read by `FreezerAction::engine`, kept with these for the name check) and
    // the rsync engines' settings.
    "engine_name",
    "engine",
    "max_segment_size",
    "rsync_block_size",
    // Snapshots of the file system (LVM, Windows VSS) and `sync` before reading.
    "snapshot",
    "lvm_auto_snap",
    "lvm_srcvol",
    "lvm_snapname",
    "lvm_snapperm",
    "lvm_snapsize",
    "lvm_dirmount",
    "lvm_volgroup",
    "sync",
    "shadow",
    "shadow_path",
    "windows_volume",
    "volume",
    // Other modes (refused by `mode`) and their settings.
    "sql_server_conf",
    "cindernative_backup_az",
    "cindernative_backup_container",
    "cindernative_freezer_only",
    "fullbackup_rotation",
    "nova_restore_network",
    "project_id",
    "temp_resource_prefix",
    // OpenStack clients.
    "insecure",
    "os_identity_api_version",
    "os_auth_ver",
    "os_trust_id",
    "proxy",
    "timeout",
    "os_auth_url",
    "os_username",
    "os_password",
    "os_project_id",
    "os_project_name",
    "os_project_domain_id",
    "os_project_domain_name",
    "os_user_domain_id",
    "os_user_domain_name",
    "os_backup_url",
    "os_region_name",
    "os_token",
    "os_endpoint_type",
    "os_cert",
    "os_cacert",
    // The agent process: output, logging, priority, its own config file.
    "quiet",
    "max_priority",
    "priority",
    "config",
    "version",
    "__version__",
    "log_file",
    "log_level",
    "debug",
    "log_dir",
    "log_config_append",
    "log_date_format",
    "use_syslog",
    "use_journal",
    "use_json",
    "use_stderr",
    "watch_log_file",
    "syslog_log_facility",
    "default_log_levels",
    // Keys of the web UI's action form and of freezer-api's stored actions.
    "get_object",
    "dst_file",
    "mandatory",
    "max_retries",
    "max_retries_interval",
];

/// Upstream options that make freezer-agent back up something other than files (a Cinder
/// volume, a Nova instance, a Glance image): accepted empty, refused when set, so that a job
/// meant for a volume does not quietly back up a folder.
const OTHER_MEDIA: &[&str] = &[
    "cinder_vol_id",
    "cinder_vol_name",
    "cinderbrick_vol_id",
    "cindernative_vol_id",
    "cindernative_backup_id",
    "nova_inst_id",
    "nova_inst_name",
    "glance_image_id",
    "glance_image_name",
    "glance_image_name_filter",
];

/// Upstream names read with a meaning of their own (see [`check_upstream_values`]).
const SPECIAL: &[&str] = &["restore_from_host", "encryption_password"];

/// Fields of upstream's job document (freezer-api `job_schema`) besides `job_actions`.
const JOB_FIELDS: &[&str] = &[
    "job_id",
    "description",
    "job_actions",
    "job_schedule",
    "action_defaults",
    "client_id",
    "user_id",
    "project_id",
    "session_id",
    "session_tag",
    "session_name",
    "user_credentials",
    "_version",
];

/// Fields of upstream's job action (freezer-api `job_action`, and what its API returns).
const JOB_ACTION_FIELDS: &[&str] = &[
    "freezer_action",
    "max_retries",
    "max_retries_interval",
    "mandatory",
    "action_id",
    "user_id",
    "project_id",
    "exit_status",
];

/// The field names serde reads for a struct without `#[serde(flatten)]`: the storage options
/// are those of [`StorageSpec`], so a field added there is known here without a second list.
fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error as ProbeError};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = ProbeError;
        fn deserialize_any<V: Visitor<'de>>(
            self,
            _: V,
        ) -> std::result::Result<V::Value, ProbeError> {
            Err(ProbeError::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, ProbeError> {
            *self.0 = fields;
            Err(ProbeError::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

fn storage_fields() -> &'static [&'static str] {
    struct_fields::<StorageSpec>()
}

/// Whether `name` is a `freezer_action` option this release reads or knowingly ignores.
pub(crate) fn is_known_action_option(name: &str) -> bool {
    TYPED.contains(&name)
        || IGNORED_UPSTREAM.contains(&name)
        || OTHER_MEDIA.contains(&name)
        || SPECIAL.contains(&name)
        || storage_fields().contains(&name)
        || crate::source::lvm::WINDOWS_ONLY.contains(&name)
}

/// The options of `action` this release neither reads nor knowingly ignores. A name whose
/// value is `null` sets nothing (freezer-api and the web UI send unset fields as `null`), so it
/// is never refused, whatever its spelling.
pub(crate) fn unknown_action_options(action: &FreezerAction) -> Vec<String> {
    action
        .other
        .iter()
        .filter(|(k, v)| !v.is_null() && !is_known_action_option(k))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Unknown names found in a document: an error for the first, unless allowed; then a warning
/// for each.
pub(crate) struct NameCheck {
    allow_unknown: bool,
    /// One line per unknown name, when they are allowed.
    pub(crate) warnings: Vec<String>,
}

impl NameCheck {
    pub(crate) fn new(allow_unknown: bool) -> Self {
        NameCheck {
            allow_unknown,
            warnings: Vec::new(),
        }
    }

    /// Checks the options of a `freezer_action` found at `at` (`""` for a lone action).
    pub(crate) fn action(&mut self, action: &FreezerAction, at: &str) -> Result<()> {
        let allow = self.allow_unknown || action.allow_unknown_options;
        for name in unknown_action_options(action) {
            let candidates = TYPED
                .iter()
                .chain(storage_fields())
                .chain(IGNORED_UPSTREAM)
                .chain(OTHER_MEDIA)
                .chain(SPECIAL);
            self.unknown(at, &name, "option", candidates, allow)?;
        }
        Ok(())
    }

    /// Checks the fields of a job document (`at` `""`) or of one of its job actions.
    pub(crate) fn job_fields<'a>(
        &mut self,
        names: impl Iterator<Item = &'a String>,
        at: &str,
        job_action: bool,
    ) -> Result<()> {
        let known = if job_action {
            JOB_ACTION_FIELDS
        } else {
            JOB_FIELDS
        };
        for name in names.filter(|n| !known.contains(&n.as_str())) {
            let what = if job_action {
                "job action field"
            } else {
                "job field"
            };
            self.unknown(at, name, what, known.iter(), self.allow_unknown)?;
        }
        Ok(())
    }

    fn unknown<'a>(
        &mut self,
        at: &str,
        name: &str,
        what: &str,
        candidates: impl Iterator<Item = &'a &'a str>,
        allow: bool,
    ) -> Result<()> {
        let field = if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}.{name}")
        };
        let hint = closest(name, candidates)
            .map(|c| format!("; did you mean {c}?"))
            .unwrap_or_default();
        if allow {
            self.warnings
                .push(format!("{field}: unknown {what}, ignored{hint}"));
            return Ok(());
        }
        Err(Error::bad_input(
            field,
            format!(
                "unknown {what}{hint} (to run a document written for a newer release anyway, allow unknown names: `freezer job run --allow-unknown-options`, or `allow_unknown_options` from Python and C; each is then a warning)"
            ),
        ))
    }
}

/// Refuses upstream options whose value asks for something this release does not do, where
/// ignoring it would quietly do something else: another kind of backup than files, or a
/// passphrase in the document (upstream's agent ignores it and stores plaintext).
pub(crate) fn check_upstream_values(action: &FreezerAction) -> Result<()> {
    let set = |name: &str| {
        action.other.get(name).is_some_and(|v| match v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => false,
            serde_json::Value::String(s) => !s.trim().is_empty(),
            _ => true,
        })
    };
    if let Some(name) = OTHER_MEDIA.iter().find(|n| set(n)) {
        return Err(Error::unsupported(format!(
            "{name}: backing up Cinder volumes, Nova instances or Glance images (this release backs up files and streams: modes fs, command, stdin)"
        )));
    }
    for name in ["engine_name", "engine"] {
        if let Some(serde_json::Value::String(e)) = action.other.get(name)
            && ["nova", "glance", "osbrick"].contains(&e.trim())
        {
            return Err(Error::unsupported(format!(
                "{name} {e}: backing up Nova instances, Glance images or Cinder volumes (this release backs up files with its own engine; leave out {name} or set it to tar)"
            )));
        }
    }
    crate::source::lvm::refuse_windows_only(action)?;
    if set("encryption_password") {
        return Err(Error::bad_input(
            "encryption_password",
            "a passphrase is read from a file, never from the document: put it in a file and name it with encrypt_pass_file",
        ));
    }
    if let Some(from) = action.restore_from_host()
        && let Some(h) = action.hostname.as_deref().filter(|h| !h.is_empty())
        && h != from
    {
        return Err(Error::bad_input(
            "restore_from_host",
            format!(
                "upstream's older name of hostname, given as {from:?} while hostname is {h:?}; keep one"
            ),
        ));
    }
    Ok(())
}

/// The known name closest to `name`, when it is close enough to be a slip: the same after
/// `-` becomes `_` and case is folded, or at most two edits away (one for short names).
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a &'a str>) -> Option<&'a str> {
    let norm = name.to_ascii_lowercase().replace('-', "_");
    let limit = if norm.chars().count() < 5 { 1 } else { 2 };
    candidates
        .map(|c| (edit_distance(&norm, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`exlcude` is one edit from `exclude`). Twenty lines here instead of the strsim
/// crate, which the workspace has only through clap: freezer-core's dependencies stay as they are.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows of the dynamic-programming table: two back, one back, current.
    let mut prev2 = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(json: &str) -> FreezerAction {
        FreezerAction::from_json(json).unwrap()
    }

    #[test]
    fn edit_distance_counts_slips() {
        assert_eq!(edit_distance("exlcude", "exclude"), 1);
        assert_eq!(edit_distance("encrypt_pas_file", "encrypt_pass_file"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn typed_names_are_typed_and_every_list_is_disjoint() {
        for name in TYPED {
            // A typed field takes the name (its value may be refused), so `other` stays empty.
            if let Ok(a) = FreezerAction::from_json(&format!(r#"{{"{name}": null}}"#)) {
                assert!(a.other.is_empty(), "{name} is not a typed field");
            }
        }
        let storage = storage_fields();
        assert!(storage.contains(&"ssh_host") && storage.contains(&"ftp_ca_file"));
        for name in IGNORED_UPSTREAM.iter().chain(OTHER_MEDIA).chain(SPECIAL) {
            assert!(!TYPED.contains(name), "{name} is typed and ignored");
            assert!(
                !storage.contains(name),
                "{name} is a storage option and ignored"
            );
        }
    }

    #[test]
    fn a_misspelt_option_is_refused_naming_the_closest() {
        for (json, field, suggestion) in [
            (
                r#"{"encrypt_pas_file":"/p"}"#,
                "encrypt_pas_file",
                "encrypt_pass_file",
            ),
            (r#"{"exlcude":"*.log"}"#, "exlcude", "exclude"),
            (
                r#"{"encrypt-pass-file":"/p"}"#,
                "encrypt-pass-file",
                "encrypt_pass_file",
            ),
            (r#"{"ssh_hots":"h"}"#, "ssh_hots", "ssh_host"),
            (
                r#"{"path_to_backpu":"/d"}"#,
                "path_to_backpu",
                "path_to_backup",
            ),
        ] {
            let e = NameCheck::new(false).action(&action(json), "").unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadInput, "{json}");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("{field}: unknown option")),
                "{text}"
            );
            assert!(
                text.contains(&format!("did you mean {suggestion}?")),
                "{text}"
            );
            assert!(text.contains("allow_unknown_options"), "{text}");
        }
        let e = NameCheck::new(false)
            .action(
                &action(r#"{"zzqx_frobnicate":1}"#),
                "job_actions[2].freezer_action",
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("job_actions[2].freezer_action.zzqx_frobnicate: unknown option (to run"),
            "no suggestion when nothing is close: {e}"
        );
    }

    #[test]
    fn values_of_unknown_names_never_show() {
        let a =
            action(r#"{"ssh_pasword":"hunter2-do-not-show","zz_secret_tokn":"t0k3n-do-not-show"}"#);
        let e = NameCheck::new(false)
            .action(&a, "")
            .unwrap_err()
            .to_string();
        let mut allowed = NameCheck::new(true);
        allowed.action(&a, "").unwrap();
        let all = format!("{e} {:?} {a:?}", allowed.warnings);
        assert!(!all.contains("do-not-show"), "{all}");
        assert!(e.contains("did you mean ssh_password?"), "{e}");
    }

    #[test]
    fn allowed_unknown_names_are_warnings_one_each() {
        let a = action(r#"{"exlcude":"*.log","zzqx_frobnicate":1,"lvm_srcvol":"/dev/x"}"#);
        let mut c = NameCheck::new(true);
        c.action(&a, "").unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("exlcude: unknown option, ignored; did you mean exclude?")
        );
        assert!(c.warnings[1].starts_with("zzqx_frobnicate: unknown option, ignored"));
        // The action itself may allow them too (C and Python pass it in the options).
        let a = action(r#"{"exlcude":"*.log","allow_unknown_options":"true"}"#);
        let mut c = NameCheck::new(false);
        c.action(&a, "").unwrap();
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn an_unknown_name_set_to_null_sets_nothing_and_is_not_refused() {
        let a = action(r#"{"encrypt_pas_file":null,"exlcude":"*.log"}"#);
        assert_eq!(unknown_action_options(&a), vec!["exlcude".to_string()]);
        let a = action(r#"{"encrypt_pas_file":null}"#);
        NameCheck::new(false).action(&a, "").unwrap();
    }

    #[test]
    fn upstream_options_that_do_not_apply_are_known() {
        let a = action(
            r#"{"lvm_srcvol":"/dev/vg/lv","lvm_snapsize":"1G","mysql_conf":"/etc/my.ini","proxy":"http://p:3128",
                "os_auth_url":"http://keystone:5000/v3","os_password":"pw","engine_name":"tar","engine":"rsync",
                "max_segment_size":33554432,"metadata_out":"-","log_file":"/var/log/f.log","snapshot":"",
                "insecure":true,"timeout":120,"sync":true,"max_priority":"","nova_inst_id":"","cinder_vol_id":null,
                "temp_resource_prefix":"freezer_","os_identity_api_version":"3","restore_from_host":"",
                "ssh_host":"h","ftp_port":"21","storage_url":"http://s","command":"ls"}"#,
        );
        assert!(
            unknown_action_options(&a).is_empty(),
            "{:?}",
            unknown_action_options(&a)
        );
        NameCheck::new(false).action(&a, "").unwrap();
        check_upstream_values(&a).unwrap();
    }

    #[test]
    fn upstream_options_that_would_do_something_else_are_refused() {
        for (json, kind, word) in [
            (
                r#"{"cinder_vol_id":"0b1e"}"#,
                crate::ErrorKind::Unsupported,
                "cinder_vol_id",
            ),
            (
                r#"{"nova_inst_name":"web1"}"#,
                crate::ErrorKind::Unsupported,
                "nova_inst_name",
            ),
            (
                r#"{"engine_name":"nova"}"#,
                crate::ErrorKind::Unsupported,
                "engine_name nova",
            ),
            (
                r#"{"encryption_password":"hunter2-do-not-show"}"#,
                crate::ErrorKind::BadInput,
                "encrypt_pass_file",
            ),
            (
                r#"{"hostname":"a","restore_from_host":"b"}"#,
                crate::ErrorKind::BadInput,
                "restore_from_host",
            ),
        ] {
            let e = check_upstream_values(&action(json)).unwrap_err();
            assert_eq!(e.kind(), kind, "{json}: {e}");
            assert!(e.to_string().contains(word), "{e}");
            assert!(!e.to_string().contains("do-not-show"), "{e}");
        }
    }

    #[test]
    fn job_fields_are_checked_with_their_path() {
        let names = ["job_id".to_string(), "job_schedul".to_string()];
        let e = NameCheck::new(false)
            .job_fields(names.iter(), "", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("job_schedul: unknown job field; did you mean job_schedule?"),
            "{e}"
        );
        let names = ["max_retires".to_string()];
        let e = NameCheck::new(false)
            .job_fields(names.iter(), "job_actions[1]", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "job_actions[1].max_retires: unknown job action field; did you mean max_retries?"
            ),
            "{e}"
        );
        let known = [
            "client_id",
            "user_credentials",
            "session_id",
            "action_defaults",
        ]
        .map(String::from);
        NameCheck::new(false)
            .job_fields(known.iter(), "", false)
            .unwrap();
    }
}
