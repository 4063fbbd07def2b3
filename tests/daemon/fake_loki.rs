//! A fake Grafana Loki: a real HTTP server on loopback answering `/loki/api/v1/query` (the
//! one metric query runbookd sends, `sum(count_over_time((Q)[Ns]))`) and
//! `/loki/api/v1/query_range` (streams, newest first), over lines the test gives it. Like the
//! simulation it applies only a `|~ "(?i)a|b"` line filter; it records every query it got.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{extract::Query, extract::State, http::HeaderMap, routing::get, Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Lines {
    /// (unix ms, stream labels, line)
    pub lines: Vec<(i64, Value, String)>,
    /// (path, query, X-Scope-OrgID) of every request.
    pub queries: Vec<(String, String, Option<String>)>,
}

type Shared = Arc<Mutex<Lines>>;

#[derive(Clone)]
pub struct FakeLoki {
    pub addr: SocketAddr,
    pub lines: Shared,
}

fn filter(query: &str) -> Vec<String> {
    let f = query.split_once("|~").map(|x| x.1.trim()).unwrap_or("");
    let f = f.trim_matches('"');
    let f = f.strip_prefix("(?i)").unwrap_or(f);
    f.split('|').map(str::to_lowercase).collect()
}

fn matching(l: &Lines, query: &str, from_ms: i64) -> Vec<(i64, Value, String)> {
    let alts = filter(query);
    let mut out: Vec<_> = l
        .lines
        .iter()
        .filter(|(at, _, line)| {
            *at >= from_ms
                && alts
                    .iter()
                    .any(|a| line.to_lowercase().contains(a.as_str()))
        })
        .cloned()
        .collect();
    out.sort_by_key(|l| std::cmp::Reverse(l.0));
    out
}

fn record(s: &Shared, path: &str, q: &HashMap<String, String>, headers: &HeaderMap) {
    let tenant = headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    s.lock().unwrap_or_else(|p| p.into_inner()).queries.push((
        path.into(),
        q.get("query").cloned().unwrap_or_default(),
        tenant,
    ));
}

async fn instant(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    record(&s, "query", &q, &headers);
    let metric = q.get("query").cloned().unwrap_or_default();
    // sum(count_over_time((INNER)[Ns]))
    let inner = metric
        .strip_prefix("sum(count_over_time((")
        .and_then(|m| m.rsplit_once(")["))
        .map(|(i, rest)| {
            (
                i.to_string(),
                rest.trim_end_matches("]))")
                    .trim_end_matches('s')
                    .parse::<i64>()
                    .unwrap_or(0),
            )
        });
    let Some((inner, secs)) = inner else {
        return Json(json!({"status": "error", "error": "parse error"}));
    };
    let now = chrono::Utc::now().timestamp_millis();
    let n = matching(
        &s.lock().unwrap_or_else(|p| p.into_inner()),
        &inner,
        now - secs * 1000,
    )
    .len();
    let result = if n == 0 {
        json!([])
    } else {
        json!([{ "metric": {}, "value": [now / 1000, n.to_string()] }])
    };
    Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
}

async fn range(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    record(&s, "query_range", &q, &headers);
    let query = q.get("query").cloned().unwrap_or_default();
    let start_ms = q
        .get("start")
        .and_then(|v| v.parse::<i128>().ok())
        .map(|ns| (ns / 1_000_000) as i64)
        .unwrap_or(0);
    let limit = q
        .get("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100);
    let lines = matching(
        &s.lock().unwrap_or_else(|p| p.into_inner()),
        &query,
        start_ms,
    );
    // One stream per label set, as Loki groups them.
    let mut streams: Vec<(Value, Vec<Value>)> = Vec::new();
    for (at, labels, line) in lines.into_iter().take(limit) {
        let v = json!([format!("{}000000", at), line]);
        match streams.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, values)) => values.push(v),
            None => streams.push((labels, vec![v])),
        }
    }
    let result: Vec<Value> = streams
        .into_iter()
        .map(|(l, v)| json!({"stream": l, "values": v}))
        .collect();
    Json(json!({"status": "success", "data": {"resultType": "streams", "result": result}}))
}

impl FakeLoki {
    pub async fn start() -> FakeLoki {
        let lines: Shared = Arc::default();
        let app = Router::new()
            .route("/loki/api/v1/query", get(instant))
            .route("/loki/api/v1/query_range", get(range))
            .with_state(lines.clone());
        let addr = crate::helpers::serve_on_loopback(app).await;
        FakeLoki { addr, lines }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A worker's line, `ago_s` seconds ago, from `host`.
    pub fn line(&self, ago_s: i64, host: &str, line: &str) {
        let at = chrono::Utc::now().timestamp_millis() - ago_s * 1000;
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
            .push((
                at,
                json!({"unit": "celery-worker", "host": host}),
                line.into(),
            ));
    }

    pub fn queries(&self) -> Vec<(String, String, Option<String>)> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queries
            .clone()
    }
}
