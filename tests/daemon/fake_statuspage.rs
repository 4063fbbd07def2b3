//! A fake Atlassian Statuspage: a real HTTP server on loopback answering the parts of the
//! v1 REST API runbookd uses — a page's unresolved incidents, creating and updating an
//! incident (with component statuses in the same body), reading a component — checking
//! `Authorization: OAuth <key>`, with knobs for failing answers.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, patch},
    Json, Router,
};
use serde_json::{json, Value};

pub const PAGE: &str = "pg1runbookd";
pub const COMPONENT: &str = "cmppayments";
pub const KEY: &str = "sp_test_key_0123456789";

#[derive(Default)]
pub struct Page {
    /// Incidents as Statuspage returns them (incident_updates newest first).
    pub incidents: Vec<Value>,
    pub component: String,
    /// Answer this many requests with 503 first.
    pub fail_503: usize,
    /// Create the incident but answer 503 this many times (the answer lost on the way).
    pub lose_create_answers: usize,
    /// (method, path) of every request that passed authentication.
    pub requests: Vec<(String, String)>,
    /// Authorization headers refused.
    pub refused: usize,
    next: u64,
}

type Shared = Arc<Mutex<Page>>;

#[derive(Clone)]
pub struct FakeStatusPage {
    pub addr: SocketAddr,
    pub page: Shared,
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Page> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Authentication, the failure knob and the request log; `Err` is the answer to give.
fn admit(
    s: &Shared,
    headers: &HeaderMap,
    page: &str,
    method: &str,
    path: String,
) -> Result<(), Box<Response>> {
    let mut p = lock(s);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("OAuth {KEY}")) {
        p.refused += 1;
        return Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "Could not authenticate"})),
            )
                .into_response(),
        ));
    }
    if page != PAGE {
        return Err(Box::new(
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "Record not found"})),
            )
                .into_response(),
        ));
    }
    p.requests.push((method.into(), path));
    if p.fail_503 > 0 {
        p.fail_503 -= 1;
        return Err(Box::new(
            (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response(),
        ));
    }
    Ok(())
}

/// Applies the incident body's component statuses to the page's component.
fn components(p: &mut Page, body: &Value) -> Value {
    let mut out = Vec::new();
    if let Some(map) = body["components"].as_object() {
        for (id, status) in map {
            if id == COMPONENT {
                p.component = status.as_str().unwrap_or("").to_string();
            }
            out.push(json!({ "id": id, "name": "Payments", "status": status }));
        }
    }
    Value::Array(out)
}

async fn unresolved(
    State(s): State<Shared>,
    Path(page): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, &page, "GET", "/incidents/unresolved".into()) {
        return *r;
    }
    let p = lock(&s);
    let open: Vec<Value> = p
        .incidents
        .iter()
        .rev()
        .filter(|i| i["status"] != "resolved")
        .cloned()
        .collect();
    Json(Value::Array(open)).into_response()
}

async fn create(
    State(s): State<Shared>,
    Path(page): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = admit(&s, &headers, &page, "POST", "/incidents".into()) {
        return *r;
    }
    let mut p = lock(&s);
    let i = &body["incident"];
    let (Some(name), Some(status)) = (i["name"].as_str(), i["status"].as_str()) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "name and status are required"})),
        )
            .into_response();
    };
    p.next += 1;
    let id = format!("inc{:04}", p.next);
    let comps = components(&mut p, i);
    let incident = json!({
        "id": id, "name": name, "status": status, "page_id": PAGE,
        "shortlink": format!("https://stspg.io/{id}"),
        "metadata": i["metadata"].clone(),
        "components": comps,
        "incident_updates": [{ "id": format!("upd{}", p.next), "status": status, "body": i["body"] }],
    });
    p.incidents.push(incident.clone());
    if p.lose_create_answers > 0 {
        p.lose_create_answers -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "answer lost").into_response();
    }
    (StatusCode::CREATED, Json(incident)).into_response()
}

async fn update(
    State(s): State<Shared>,
    Path((page, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = admit(&s, &headers, &page, "PATCH", format!("/incidents/{id}")) {
        return *r;
    }
    let mut p = lock(&s);
    let i = body["incident"].clone();
    components(&mut p, &i);
    let Some(incident) = p.incidents.iter_mut().find(|x| x["id"] == id.as_str()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Record not found"})),
        )
            .into_response();
    };
    if let Some(status) = i["status"].as_str() {
        incident["status"] = json!(status);
    }
    if let Some(text) = i["body"].as_str() {
        let status = incident["status"].clone();
        if let Some(updates) = incident["incident_updates"].as_array_mut() {
            updates.insert(0, json!({ "status": status, "body": text }));
        }
    }
    Json(incident.clone()).into_response()
}

async fn component(
    State(s): State<Shared>,
    Path((page, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, &page, "GET", format!("/components/{id}")) {
        return *r;
    }
    let p = lock(&s);
    if id != COMPONENT {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Record not found"})),
        )
            .into_response();
    }
    Json(json!({ "id": id, "name": "Payments", "status": p.component })).into_response()
}

impl FakeStatusPage {
    pub async fn start() -> FakeStatusPage {
        let page: Shared = Arc::new(Mutex::new(Page {
            component: "operational".into(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/v1/pages/{page}/incidents/unresolved", get(unresolved))
            .route("/v1/pages/{page}/incidents", axum::routing::post(create))
            .route("/v1/pages/{page}/incidents/{id}", patch(update))
            .route("/v1/pages/{page}/components/{id}", get(component))
            .with_state(page.clone());
        let addr = crate::helpers::serve_on_loopback(app).await;
        FakeStatusPage { addr, page }
    }

    pub fn api_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `[statuspage]` for runbookd, the key in `STATUSPAGE_API_KEY`.
    pub fn config(&self) -> String {
        format!(
            "[statuspage]\napi_base = \"{}\"\npage_id = \"{PAGE}\"\ncomponent_id = \"{COMPONENT}\"\napi_key_env = \"STATUSPAGE_API_KEY\"\ntimeout = \"2s\"\n",
            self.api_base()
        )
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Page) -> R) -> R {
        f(&mut lock(&self.page))
    }

    pub fn incidents(&self) -> Vec<Value> {
        self.with(|p| p.incidents.clone())
    }

    pub fn component(&self) -> String {
        self.with(|p| p.component.clone())
    }

    /// Requests that changed the page (POST, PATCH).
    pub fn writes(&self) -> usize {
        self.with(|p| p.requests.iter().filter(|(m, _)| m != "GET").count())
    }
}
