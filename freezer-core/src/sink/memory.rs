//! An in-memory sink, for tests and for embedding programs that want a scratch repository.
//! It keeps the whole contract (atomic puts, `Create` mode, ranged gets) and nothing more.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{GetBody, ObjectMeta, Payload, PutMode, Sink, check_key, clamp};
use crate::error::{Error, Result};

/// A sink that keeps objects in memory. Clones share the same objects.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    name: String,
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl MemorySink {
    /// An empty sink named `name` in messages.
    pub fn new(name: impl Into<String>) -> Self {
        MemorySink {
            name: name.into(),
            objects: Arc::default(),
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces an object's bytes directly (tests use it to damage objects).
    pub fn set_raw(&self, key: &str, data: Bytes) {
        self.objects().insert(key.to_string(), data);
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn describe(&self) -> String {
        format!("memory:{}", self.name)
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        check_key(key)?;
        let data = payload.to_bytes();
        let mut objects = self.objects();
        if mode == PutMode::Create && objects.contains_key(key) {
            return Err(Error::AlreadyExists {
                what: format!("{}/{key}", self.describe()),
            });
        }
        objects.insert(key.to_string(), data);
        Ok(())
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        check_key(key)?;
        let objects = self.objects();
        let data = objects
            .get(key)
            .ok_or_else(|| Error::not_found(format!("{}/{key}", self.describe())))?;
        let r = clamp(range, data.len() as u64);
        Ok(GetBody::Bytes(data.slice(r.start as usize..r.end as usize)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.objects().remove(key);
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        check_key(key)?;
        self.objects()
            .get(key)
            .map(|v| ObjectMeta {
                key: key.to_string(),
                size: v.len() as u64,
            })
            .ok_or_else(|| Error::not_found(format!("{}/{key}", self.describe())))
    }
}
