//! What the scheduler owes the API: job state PATCHes, backup metadata and session ends,
//! queued in order and delivered when the API answers, so that an outage loses nothing.
//!
//! Bounded: a job's newer PATCH replaces its older one still queued (the API keeps only the
//! last `job_schedule` anyway); past [`Outbox::capacity`] the oldest report goes, with a
//! warning. An answer that is not an outage (404 for a deleted job, 400) drops the report
//! with a warning: sending it again would not change the answer.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::service::client::{ApiError, Client, JobPatch};

/// One report for the API.
#[derive(Clone, Debug)]
pub enum Report {
    /// `PATCH /jobs/{job_id}`.
    JobState {
        /// The job.
        job_id: String,
        /// What to write.
        patch: JobPatch,
    },
    /// `POST /backups`.
    Backup {
        /// The metadata document.
        metadata: Value,
    },
    /// `POST /sessions/{session_id}/action` with `end`.
    EndSession {
        /// The session.
        session_id: String,
        /// The job that ended.
        job_id: String,
        /// Its tag.
        tag: i64,
        /// `success`, `fail` or `aborted`.
        result: String,
    },
}

impl Report {
    pub(crate) fn describe(&self) -> String {
        match self {
            Report::JobState { job_id, .. } => format!("the state of job {job_id}"),
            Report::Backup { metadata } => format!(
                "the metadata of backup {} of job {}",
                metadata["backup_name"], metadata["job_id"]
            ),
            Report::EndSession {
                session_id, job_id, ..
            } => format!("the end of job {job_id} in session {session_id}"),
        }
    }

    async fn send(&self, client: &Client) -> Result<(), ApiError> {
        match self {
            Report::JobState { job_id, patch } => client.patch_job(job_id, patch).await,
            Report::Backup { metadata } => client.post_backup(metadata).await.map(|id| {
                tracing::info!(backup_id = id, job_id = %metadata["job_id"], "backup metadata stored");
            }),
            Report::EndSession {
                session_id,
                job_id,
                tag,
                result,
            } => client
                .end_session(session_id, job_id, *tag, result)
                .await
                .map(drop),
        }
    }
}

/// The queue of reports, each with the client it goes through when not the default one
/// (a centralized scheduler's per-trust client).
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<(Report, Option<Arc<Client>>)>,
    capacity: usize,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` reports.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The most reports it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a report (a job's older queued state is replaced), sent with the client
    /// [`Outbox::flush`] is given.
    pub fn push(&mut self, r: Report) {
        self.enqueue(r, None);
    }

    /// Queues a report to send with `client` (a trust-scoped one) instead.
    pub fn push_via(&mut self, r: Report, client: Arc<Client>) {
        self.enqueue(r, Some(client));
    }

    fn enqueue(&mut self, r: Report, client: Option<Arc<Client>>) {
        if let Report::JobState { job_id, .. } = &r {
            self.queue
                .retain(|(q, _)| !matches!(q, Report::JobState { job_id: j, .. } if j == job_id));
        }
        if self.queue.len() >= self.capacity
            && let Some((old, _)) = self.queue.pop_front()
        {
            tracing::warn!(
                "{} reports wait for the API; dropped {}",
                self.capacity,
                old.describe()
            );
        }
        self.queue.push_back((r, client));
    }

    /// Sends reports in order until the queue is empty (`Ok`) or the API is unreachable
    /// (`Err` with the outage; the report stays first in the queue). Returns the job ids
    /// whose state reached the API.
    pub async fn flush(&mut self, client: &Client) -> Result<Vec<String>, ApiError> {
        let mut delivered = Vec::new();
        while let Some((r, via)) = self.queue.front() {
            match r.send(via.as_deref().unwrap_or(client)).await {
                Ok(()) => {
                    if let Report::JobState { job_id, .. } = r {
                        delivered.push(job_id.clone());
                    }
                }
                Err(e) if e.is_unreachable() => return Err(e),
                Err(e) => tracing::warn!("freezer-api refused {}: {e}", r.describe()),
            }
            self.queue.pop_front();
        }
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(job: &str, status: &str) -> Report {
        Report::JobState {
            job_id: job.into(),
            patch: JobPatch {
                job_schedule: serde_json::json!({ "status": status }),
                session_id: String::new(),
                session_tag: 0,
            },
        }
    }

    #[test]
    fn a_newer_state_replaces_the_queued_one_and_the_queue_is_bounded() {
        let mut o = Outbox::new(3);
        o.push(state("a", "running"));
        o.push(Report::Backup {
            metadata: serde_json::json!({"backup_name": "b", "job_id": "a"}),
        });
        o.push(state("a", "scheduled"));
        assert_eq!(o.len(), 2);
        assert!(
            matches!(&o.queue[1].0, Report::JobState { patch, .. } if patch.job_schedule["status"] == "scheduled")
        );
        o.push(state("b", "running"));
        o.push(state("c", "running"));
        assert_eq!(o.len(), 3, "bounded");
        assert!(matches!(&o.queue[0].0, Report::JobState { job_id, .. } if job_id == "a"));
    }
}
