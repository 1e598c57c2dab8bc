//! Where jobs come from: a freezer-api (through [`Client`]) or a folder of job files.
//!
//! A feed is read again at each poll and returns every job it holds now; the scheduler
//! compares that with what it runs. The folder is read whole each time (files are small), so
//! a file added, changed or removed takes effect at the next poll, without a restart
//! (upstream reads its folder once). A file that does not parse is an error naming the file;
//! the job it held before, if any, keeps its last good version, and the other files are not
//! affected.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::job::Job;
use crate::service::client::{ApiError, Client};

/// One job as a feed holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedJob {
    /// Its id: the document's `job_id`, or a file's name without its extension.
    pub id: String,
    /// Where it comes from: the file's path, or `freezer-api`.
    pub origin: String,
    /// The document as read (`job_schedule` and all).
    pub doc: Value,
    /// The document parsed and checked.
    pub job: Job,
}

/// What a poll found.
#[derive(Debug, Default)]
pub struct FeedRead {
    /// The jobs, by id.
    pub jobs: BTreeMap<String, FeedJob>,
    /// Documents that could not be used, each naming its file or job.
    pub errors: Vec<String>,
    /// Set when the feed could not be read at all (the API is down): the scheduler keeps the
    /// jobs it has.
    pub unreachable: Option<ApiError>,
}

/// A source of jobs.
#[derive(Debug)]
pub enum JobFeed {
    /// The jobs of this client in a freezer-api.
    Api(Arc<Client>),
    /// The `*.json` (and upstream's `*.conf`) job files of a folder.
    Dir(PathBuf),
}

/// A file's text, what it parsed to, and the last good job it held.
type FileState = (String, Result<FeedJob, String>, Option<FeedJob>);

/// Reads a feed, remembering the folder's files between polls.
#[derive(Debug)]
pub(crate) struct FeedReader {
    feed: JobFeed,
    allow_unknown: bool,
    /// Per file: its text and the last good job it held.
    files: HashMap<PathBuf, FileState>,
}

impl FeedReader {
    pub(crate) fn new(feed: JobFeed, allow_unknown: bool) -> Self {
        FeedReader {
            feed,
            allow_unknown,
            files: HashMap::new(),
        }
    }

    pub(crate) fn client(&self) -> Option<&Arc<Client>> {
        match &self.feed {
            JobFeed::Api(c) => Some(c),
            JobFeed::Dir(_) => None,
        }
    }

    /// Every job the feed holds now; `centralized`: every project's jobs for this (central)
    /// client, those without a trust left out with a line in the errors.
    pub(crate) async fn read(&mut self, client_id: &str, centralized: bool) -> FeedRead {
        match &self.feed {
            JobFeed::Api(c) => read_api(c, client_id, self.allow_unknown, centralized).await,
            JobFeed::Dir(d) => {
                let d = d.clone();
                self.read_dir(&d)
            }
        }
    }

    fn read_dir(&mut self, dir: &Path) -> FeedRead {
        let mut out = FeedRead::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                out.errors
                    .push(format!("jobs folder {}: {e}", dir.display()));
                // Keep what was read before: a folder briefly unreadable is not a removal.
                for (_, cur, good) in self.files.values() {
                    if let Some(j) = cur.as_ref().ok().or(good.as_ref()) {
                        out.jobs.insert(j.id.clone(), j.clone());
                    }
                }
                return out;
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "conf")
                ) && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        paths.sort();
        self.files.retain(|p, _| paths.contains(p));
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Removed between the listing and the read: gone at the next poll.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let slot = self
                .files
                .entry(path.clone())
                .or_insert_with(|| (String::new(), Err("not read yet".into()), None));
            if slot.0 != text || slot.1.as_ref().is_err_and(|e| e == "not read yet") {
                let parsed = parse_file(&path, &text, self.allow_unknown);
                let good = parsed.as_ref().ok().cloned().or(slot.2.take());
                *slot = (text, parsed, good);
            }
            let (_, cur, good) = &*slot;
            if let Err(e) = cur {
                out.errors.push(e.clone());
            }
            let Some(job) = cur.as_ref().ok().or(good.as_ref()) else {
                continue;
            };
            if let Some(other) = out.jobs.get(&job.id) {
                out.errors.push(format!(
                    "{}: job_id {:?} is already the id of the job in {}; this file is ignored",
                    path.display(),
                    job.id,
                    other.origin
                ));
                continue;
            }
            out.jobs.insert(job.id.clone(), job.clone());
        }
        out
    }
}

fn parse_file(path: &Path, text: &str, allow_unknown: bool) -> Result<FeedJob, String> {
    let name = path.display();
    let mut doc: Value =
        serde_json::from_str(text).map_err(|e| format!("{name}: malformed JSON: {e}"))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("job")
        .to_string();
    let id = match doc.get("job_id") {
        None | Some(Value::Null) => stem,
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(other) => {
            return Err(format!(
                "{name}: job_id: expected a non-empty string, got {other}"
            ));
        }
    };
    if let Some(o) = doc.as_object_mut() {
        o.insert("job_id".into(), json!(id));
    }
    let job = check(&doc, allow_unknown).map_err(|e| format!("{name}: {e}"))?;
    Ok(FeedJob {
        id,
        origin: name.to_string(),
        doc,
        job,
    })
}

/// Parses and checks a job document (options, schedule fields).
pub(crate) fn check(doc: &Value, allow_unknown: bool) -> crate::Result<Job> {
    let job = Job::from_json(&doc.to_string())?;
    job.validate_with(allow_unknown)?;
    // The schedule's fields are checked here too, so that a bad one names its file.
    super::schedule::JobSchedule::parse(
        job.job_schedule.as_ref(),
        &jiff::tz::TimeZone::UTC,
        jiff::Timestamp::UNIX_EPOCH,
    )?;
    Ok(job)
}

async fn read_api(
    client: &Client,
    client_id: &str,
    allow_unknown: bool,
    centralized: bool,
) -> FeedRead {
    let mut out = FeedRead::default();
    let search = json!({
        "match": [{"client_id": client_id}],
        "match_not": [{"status": "completed"}],
    });
    let listed = if centralized {
        client.list_all_projects_jobs(&search).await
    } else {
        client.list_all_jobs(&search).await
    };
    let docs = match listed {
        Ok(d) => d,
        Err(e) if e.is_unreachable() => {
            out.unreachable = Some(e);
            return out;
        }
        Err(e) => {
            // Not an outage (401 with bad credentials, 403): nothing can be listed; keep the
            // jobs we have, say why.
            out.errors.push(e.to_string());
            out.unreachable = Some(e);
            return out;
        }
    };
    for doc in docs {
        let Some(id) = doc
            .get("job_id")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            out.errors
                .push(format!("freezer-api: a job without job_id: {doc}"));
            continue;
        };
        // Another client's job (an API that ignores the search) is not ours to run.
        if doc
            .get("client_id")
            .and_then(Value::as_str)
            .is_some_and(|c| c != client_id)
        {
            continue;
        }
        if centralized
            && doc
                .pointer("/user_credentials/trust_id")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            out.errors.push(format!(
                "freezer-api job {id}: ignored: it has no user_credentials.trust_id, and a \
                 centralized scheduler runs a job only through its creator's trust (create \
                 it again with the centralized scheduler enabled in the API)"
            ));
            continue;
        }
        match check(&doc, allow_unknown) {
            Ok(job) => {
                out.jobs.insert(
                    id.clone(),
                    FeedJob {
                        id,
                        origin: "freezer-api".into(),
                        doc,
                        job,
                    },
                );
            }
            Err(e) => out.errors.push(format!("freezer-api job {id}: {e}")),
        }
    }
    out
}
