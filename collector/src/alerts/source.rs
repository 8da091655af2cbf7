//! Where alert rules count: the collector's own index, or in cluster mode every shard
//! (fanned out to the shard owners, as a search is). In cluster mode only the owner of
//! shard 0 evaluates, so a rule is evaluated once per cluster, not once per collector.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::index::LogIndex;
use crate::search::{SearchError, SearchRequest, SearchResponse, search};

/// What alert rules are measured against.
#[derive(Clone)]
pub enum CountSource {
    /// A single collector's index.
    Index(LogIndex),
    /// Every shard of a cluster; blocking calls run the fan-out on this runtime.
    Cluster {
        /// The cluster member.
        cluster: Arc<Cluster>,
        /// The runtime to run the fan-out on (evaluation runs on a blocking thread).
        runtime: tokio::runtime::Handle,
    },
}

impl CountSource {
    /// Whether rules are evaluated on this collector now.
    pub fn evaluates_here(&self) -> bool {
        match self {
            CountSource::Index(_) => true,
            CountSource::Cluster { cluster, .. } => cluster.owned(0).is_some(),
        }
    }

    /// Runs a search (blocking). In cluster mode a shard that does not answer makes the
    /// whole count fail: a partial count would make rules fire or resolve wrongly.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse, SearchError> {
        let (cluster, runtime) = match self {
            CountSource::Index(index) => return search(index, req),
            CountSource::Cluster { cluster, runtime } => (cluster, runtime),
        };
        let mut query = vec![("q".to_string(), req.q.clone())];
        if let Some(f) = &req.from {
            query.push(("from".into(), f.clone()));
        }
        if let Some(t) = &req.to {
            query.push(("to".into(), t.clone()));
        }
        let limit = req.limit.unwrap_or(100);
        query.push(("limit".into(), limit.to_string()));
        query.push((
            "order".into(),
            if req.ascending { "asc" } else { "desc" }.into(),
        ));
        let replies = runtime.block_on(cluster.ask_owners("/api/v1/search", &query, None));
        let merged = crate::cluster::fanout::merge_search(replies, req.ascending, limit, None);
        if let Some(missing) = merged["missing_shards"]
            .as_array()
            .filter(|m| !m.is_empty())
        {
            return Err(SearchError::BadRequest(format!(
                "not every shard answered: {}",
                Value::Array(missing.clone())
            )));
        }
        let hits = merged["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                h.as_object().map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>()
                })
            })
            .collect();
        let rows = merged.get("rows").and_then(Value::as_array).map(|rows| {
            rows.iter()
                .filter_map(|r| r.as_array().cloned())
                .collect::<Vec<_>>()
        });
        let columns = merged.get("columns").and_then(Value::as_array).map(|c| {
            c.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        });
        Ok(SearchResponse {
            total: merged["total"].as_u64().unwrap_or(0),
            hits,
            columns,
            rows,
            took_ms: merged["took_ms"].as_u64().unwrap_or(0),
        })
    }
}
