//! Search bodies of list requests (`{"match": [...], "match_not": [...]}`) and pagination.
//!
//! Upstream's SQLAlchemy driver looks every key up anywhere in the document (recursively,
//! in nested objects and lists) and compares for equality; the CLI's `--search` sends
//! `{"match": [{"_all": "<JSON list of {key: value}>"}]}`. Here a key is looked up
//! breadth-first, so the shallowest occurrence counts (upstream kept the last one found,
//! which lets a nested field shadow a top-level one), and an `_all` that is not such a JSON
//! list is a free-text search over every string of the document (upstream ignored it and
//! returned everything). This module is pure: it never reads the store.

use std::collections::VecDeque;

use serde_json::Value;

use super::error::ApiError;

/// One parsed search body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Search {
    /// Every pair must be found with this value.
    pub matches: Vec<(String, Value)>,
    /// No pair may be found with this value.
    pub not: Vec<(String, Value)>,
    /// Free text every document must contain somewhere.
    pub text: Vec<String>,
    /// Free text no document may contain.
    pub not_text: Vec<String>,
}

impl Search {
    /// Parses a search body; `None` when it asks for nothing (empty body, `{}`).
    pub fn parse(body: &Value) -> Result<Option<Search>, ApiError> {
        let o = match body {
            Value::Null => return Ok(None),
            Value::Object(o) => o,
            other => {
                return Err(ApiError::bad_request(format!(
                    "search: the body must be an object ({{\"match\": [...], \"match_not\": [...]}}), not {other}"
                )));
            }
        };
        let mut s = Search::default();
        if let Some(m) = o.get("match") {
            collect("search.match", m, &mut s.matches, &mut s.text)?;
        }
        if let Some(m) = o.get("match_not") {
            collect("search.match_not", m, &mut s.not, &mut s.not_text)?;
        }
        let empty =
            s.matches.is_empty() && s.not.is_empty() && s.text.is_empty() && s.not_text.is_empty();
        Ok((!empty).then_some(s))
    }

    /// Whether `doc` satisfies the search.
    pub fn accepts(&self, doc: &Value) -> bool {
        self.matches.iter().all(|(k, v)| find(doc, k) == Some(v))
            && self.not.iter().all(|(k, v)| find(doc, k) != Some(v))
            && self.text.iter().all(|t| contains_text(doc, t))
            && !self.not_text.iter().any(|t| contains_text(doc, t))
    }
}

/// The time bounds of a backup search: `time_after` and `time_before`, in seconds since the
/// epoch, both inclusive (upstream's Elasticsearch driver used `gte` and `lte`; its SQLAlchemy
/// driver ignored both keys). They bound the metadata's `time_stamp`, the field agents and
/// schedulers write; upstream's Elasticsearch driver ranged over `timestamp`, a field no
/// backup has, so its bounds matched nothing. A backup without a readable `time_stamp` is
/// outside any bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// The earliest `time_stamp` accepted.
    pub after: Option<i64>,
    /// The latest `time_stamp` accepted.
    pub before: Option<i64>,
}

impl TimeRange {
    /// Reads `time_after` and `time_before` from a search body; `None` when it has neither.
    /// Each is an integer or a string holding one (upstream passed it through `int()`);
    /// anything else is a 400 naming the field.
    pub fn parse(body: &Value) -> Result<Option<TimeRange>, ApiError> {
        let Value::Object(o) = body else {
            return Ok(None);
        };
        let bound = |name: &str| -> Result<Option<i64>, ApiError> {
            let bad = |v: &Value| {
                ApiError::bad_request(format!(
                    "search.{name}: {v} is not an integer (seconds since the epoch)"
                ))
            };
            match o.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v @ Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(v)),
                Some(v @ Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(v)),
                Some(v) => Err(bad(v)),
            }
        };
        let range = TimeRange {
            after: bound("time_after")?,
            before: bound("time_before")?,
        };
        Ok((range != TimeRange::default()).then_some(range))
    }

    /// Whether a backup document's `backup_metadata.time_stamp` is within the bounds.
    pub fn accepts(&self, backup: &Value) -> bool {
        let stamp = match &backup["backup_metadata"]["time_stamp"] {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        stamp.is_some_and(|t| {
            self.after.is_none_or(|a| t >= a) && self.before.is_none_or(|b| t <= b)
        })
    }
}

fn collect(
    path: &str,
    v: &Value,
    pairs: &mut Vec<(String, Value)>,
    text: &mut Vec<String>,
) -> Result<(), ApiError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        Value::Null => vec![],
        other => {
            return Err(ApiError::bad_request(format!(
                "{path}: must be a list of {{key: value}} objects, not {other}"
            )));
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let o = item.as_object().ok_or_else(|| {
            ApiError::bad_request(format!("{path}[{i}]: must be an object {{key: value}}"))
        })?;
        for (k, v) in o {
            if k == "_all" {
                match v {
                    Value::String(s) => all_form(s, pairs, text),
                    Value::Null => {}
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "{path}[{i}]._all: must be a string"
                        )));
                    }
                }
            } else {
                pairs.push((k.clone(), v.clone()));
            }
        }
    }
    Ok(())
}

/// The CLI's `_all`: a JSON list of `{key: value}` (pairs), or free text.
fn all_form(s: &str, pairs: &mut Vec<(String, Value)>, text: &mut Vec<String>) {
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s)
        && items.iter().all(Value::is_object)
    {
        for item in items {
            if let Value::Object(o) = item {
                pairs.extend(o);
            }
        }
        return;
    }
    let t = s.trim();
    if !t.is_empty() {
        text.push(t.to_lowercase());
    }
}

/// The value of `key` at its shallowest occurrence in `doc` (breadth-first, in document
/// order at each depth).
pub fn find<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    let mut queue = VecDeque::from([doc]);
    while let Some(v) = queue.pop_front() {
        match v {
            Value::Object(o) => {
                if let Some(hit) = o.get(key) {
                    return Some(hit);
                }
                queue.extend(o.values());
            }
            Value::Array(a) => queue.extend(a.iter()),
            _ => {}
        }
    }
    None
}

fn contains_text(doc: &Value, lowered: &str) -> bool {
    match doc {
        Value::String(s) => s.to_lowercase().contains(lowered),
        Value::Object(o) => o.values().any(|v| contains_text(v, lowered)),
        Value::Array(a) => a.iter().any(|v| contains_text(v, lowered)),
        _ => false,
    }
}

/// `?limit` and `?offset` of a list request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// How many documents to skip.
    pub offset: usize,
    /// How many to return at most.
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: 10,
        }
    }
}

impl Page {
    /// Reads `limit` (default 10; 0 also means 10, as upstream's `or 10`) and `offset`
    /// (default 0); a value that is not a non-negative integer is a 400 naming it.
    pub fn from_query(limit: Option<&str>, offset: Option<&str>) -> Result<Page, ApiError> {
        let num = |name: &str, v: &str| {
            v.trim().parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("{name}: {v:?} is not a non-negative integer"))
            })
        };
        let mut page = Page::default();
        if let Some(l) = limit.filter(|l| !l.is_empty()) {
            page.limit = match num("limit", l)? {
                0 => 10,
                n => n,
            };
        }
        if let Some(o) = offset.filter(|o| !o.is_empty()) {
            page.offset = num("offset", o)?;
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recursive_keys_shallowest_wins() {
        let doc = json!({"client_id": "a", "job_schedule": {"status": "completed"},
            "jobs": {"j": {"client_id": "b", "status": "running"}}});
        assert_eq!(find(&doc, "status"), Some(&json!("completed")));
        assert_eq!(find(&doc, "client_id"), Some(&json!("a")));
        let s = Search::parse(
            &json!({"match": [{"client_id": "a"}], "match_not": [{"status": "running"}]}),
        )
        .unwrap()
        .unwrap();
        assert!(s.accepts(&doc));
        let s = Search::parse(&json!({"match_not": [{"status": "completed"}]}))
            .unwrap()
            .unwrap();
        assert!(!s.accepts(&doc));
    }

    #[test]
    fn the_all_form() {
        let doc = json!({"client_id": "node1_2", "job_schedule": {"status": "completed"}, "description": "Nightly Home"});
        let s = Search::parse(&json!({"match": [{"_all": "[{\"client_id\": \"node1_2\"}, {\"status\": \"completed\"}]"}]}))
            .unwrap()
            .unwrap();
        assert_eq!(s.matches.len(), 2);
        assert!(s.accepts(&doc));
        let s = Search::parse(&json!({"match": [{"_all": "nightly"}]}))
            .unwrap()
            .unwrap();
        assert!(s.accepts(&doc));
        let s = Search::parse(&json!({"match": [{"_all": "weekly"}]}))
            .unwrap()
            .unwrap();
        assert!(!s.accepts(&doc));
        assert_eq!(Search::parse(&json!({})).unwrap(), None);
        assert!(Search::parse(&json!({"match": "x"})).is_err());
        assert!(Search::parse(&json!([1])).is_err());
    }

    #[test]
    fn time_bounds_are_inclusive_on_time_stamp() {
        let at = |t: Value| json!({"backup_metadata": {"time_stamp": t}});
        let r = TimeRange::parse(&json!({"time_after": 10, "time_before": "20"}))
            .unwrap()
            .unwrap();
        assert_eq!((r.after, r.before), (Some(10), Some(20)));
        assert!(r.accepts(&at(json!(10))));
        assert!(r.accepts(&at(json!(20))));
        assert!(r.accepts(&at(json!("15"))));
        assert!(!r.accepts(&at(json!(9))));
        assert!(!r.accepts(&at(json!(21))));
        assert!(!r.accepts(&json!({"backup_metadata": {"timestamp": 15}})));
        assert_eq!(TimeRange::parse(&json!({"match": []})).unwrap(), None);
        for bad in [json!("soon"), json!(1.5), json!(true), json!([1])] {
            let e = TimeRange::parse(&json!({ "time_before": bad })).unwrap_err();
            assert!(e.description.starts_with("search.time_before:"), "{e:?}");
        }
    }

    #[test]
    fn pages() {
        assert_eq!(
            Page::from_query(None, None).unwrap(),
            Page {
                offset: 0,
                limit: 10
            }
        );
        assert_eq!(
            Page::from_query(Some("3"), Some("4")).unwrap(),
            Page {
                offset: 4,
                limit: 3
            }
        );
        assert!(
            Page::from_query(Some("-1"), None)
                .unwrap_err()
                .description
                .starts_with("limit:")
        );
        assert!(
            Page::from_query(None, Some("x"))
                .unwrap_err()
                .description
                .starts_with("offset:")
        );
    }
}
