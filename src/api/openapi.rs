//! The OpenAPI 3.1 document of the HTTP API, built from the handlers' own `#[utoipa::path]`
//! annotations and the answer types' `ToSchema` derives, so it moves with the code. Served
//! at `GET /api/v1/openapi.json` (viewer) and committed as `docs/openapi.json`; a test
//! fails when the two differ (regenerate: `RUNBOOKD_BLESS=1 cargo test --lib
//! api::openapi`).
//!
//! Each operation names the role it needs in `x-runbookd-role` (written beside the
//! handler's `caller.require`); [`Roles`] turns that into the bearer security requirement,
//! a line of the description, and the auth answers (401, 403, 429) every such operation
//! can give. The answers any route can give (400 for a NUL or a bad query, 503 past
//! `[server] request_timeout` or with the state store down) are added to every operation.
//! The dashboard's pages and forms are not part of this API and are not in the document.

use std::sync::{Arc, OnceLock};

use axum::{
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};
use utoipa::{
    openapi::{
        extensions::Extensions,
        path::Operation,
        response::{Response as Answer, ResponseBuilder},
        security::{HttpAuthScheme, SecurityRequirement, SecurityScheme},
        ContentBuilder, HeaderBuilder, Ref, RefOr,
    },
    Modify, OpenApi,
};

use crate::http::{
    caller::{Access, Caller},
    error::{ApiError, ErrorBody},
    health,
};

/// The document's root: every route of the API and the probes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "runbookd",
        description = "The HTTP API of runbookd: playbooks, runs, alerts, incidents, breakers, \
                       approvals, the live event stream, and the probes. Errors are \
                       `{\"error\": \"...\"}` with the status that says what went wrong. \
                       Auth: a bearer token from `[[server.tokens]]`, each with a role \
                       (`ingest`, `viewer`, `operator`); each operation names the role it \
                       needs in `x-runbookd-role`."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
        super::playbooks::list,
        super::playbooks::show,
        super::runs::trigger,
        super::runs::list,
        super::runs::show,
        super::runs::recording,
        super::audit::audit,
        super::audit::notifications,
        super::alerts::receive,
        super::incidents::list,
        super::incidents::show,
        super::incidents::ack,
        super::incidents::resolve,
        super::breakers::list,
        super::breakers::show,
        super::breakers::reset,
        super::replicas::list,
        super::approvals::list,
        super::approvals::show,
        super::approvals::approve,
        super::approvals::deny,
        super::slack::interactions,
        super::events::events,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Roles),
    tags(
        (name = "probes", description = "Liveness, readiness and metrics: open, as probes and scrapers expect"),
        (name = "meta", description = "This document"),
        (name = "playbooks", description = "What is serving, and what failed to load"),
        (name = "runs", description = "Start runs and read them back"),
        (name = "alerts", description = "Alertmanager's webhook"),
        (name = "incidents", description = "Incidents, their timeline, acknowledge and resolve"),
        (name = "breakers", description = "Circuit breakers as the app sees them"),
        (name = "approvals", description = "Approvals playbooks ask humans for"),
        (name = "audit", description = "What runbookd did and told"),
        (name = "replicas", description = "The daemons sharing the state store"),
        (name = "events", description = "The live stream of changes"),
    )
)]
pub struct ApiDoc;

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// Turns each operation's `x-runbookd-role` into its security requirement and auth
/// answers, and adds the answers every route can give.
struct Roles;

impl Modify for Roles {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            BEARER.into(),
            RefOr::T(SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of `[[server.tokens]]`; its role decides what it may do",
                    ))
                    .build(),
            )),
        );
        let shared: [(&str, &str, &str, bool); 6] = [
            ("BadRequest", "400", "Bad input, named: a query or body that does not parse, a NUL (`%00`) in the path or query", false),
            ("Unauthorized", "401", "No token, or a wrong one", false),
            ("Forbidden", "403", "The token's role may not do this (the error says which role it needs)", false),
            ("PayloadTooLarge", "413", "Body over `server.max_body_bytes`", false),
            ("Throttled", "429", "This address presented too many wrong tokens: wait `Retry-After` seconds", true),
            ("Unavailable", "503", "The state store is unavailable, or the answer took longer than `[server] request_timeout`: retry", false),
        ];
        for (name, _, description, retry_after) in shared {
            components.responses.insert(
                name.into(),
                RefOr::T(error_answer(description, retry_after)),
            );
        }
        let shared_ref = |status: &str| {
            shared
                .iter()
                .find(|s| s.1 == status)
                .map(|s| RefOr::<Answer>::Ref(Ref::from_response_name(s.0)))
        };
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                // Handlers are named for what they do within their module (`list`,
                // `show`): the tag makes the operation id unique (`runs_show`).
                if let (Some(tag), Some(id)) =
                    (op.tags.as_ref().and_then(|t| t.first()), &op.operation_id)
                {
                    if !id.starts_with(&format!("{tag}_")) {
                        op.operation_id = Some(format!("{tag}_{id}"));
                    }
                }
                no_nul_in_parameters(op);
                let role = role_of(op);
                let bearer = matches!(role.as_deref(), Some("viewer" | "operator" | "ingest"));
                let mut add = vec!["400", "503"];
                if bearer {
                    op.security =
                        Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                    add.extend(["401", "403", "429"]);
                    let line = format!("Role: `{}`.", who_may(role.as_deref().unwrap_or("")));
                    op.description = Some(match op.description.take() {
                        Some(d) if !d.is_empty() => format!("{d}\n\n{line}"),
                        _ => line,
                    });
                }
                if op.request_body.is_some() {
                    add.push("413");
                }
                for status in add {
                    if let Some(r) = shared_ref(status) {
                        op.responses.responses.entry(status.into()).or_insert(r);
                    }
                }
            }
        }
    }
}

/// A NUL (`%00`) in a path or query is refused with 400 before any handler (see
/// `http::router`): every string parameter says so with a pattern.
fn no_nul_in_parameters(op: &mut Operation) {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    for p in op.parameters.iter_mut().flatten() {
        let RefOr::T(p) = p else { continue };
        if let Some(RefOr::T(Schema::Object(o))) = &mut p.schema {
            if o.schema_type == SchemaType::Type(Type::String) && o.pattern.is_none() {
                o.pattern = Some("^[^\\u0000]*$".into());
            }
        }
    }
}

/// The role an operation's `x-runbookd-role` names.
fn role_of(op: &Operation) -> Option<String> {
    let ext: &Extensions = op.extensions.as_ref()?;
    ext.get("x-runbookd-role")?.as_str().map(str::to_string)
}

/// Every role that may call an operation needing `role` (operators may do everything).
fn who_may(role: &str) -> String {
    match role {
        "viewer" => "viewer or operator".into(),
        "ingest" => "ingest or operator".into(),
        other => other.into(),
    }
}

/// An error answer: the `ErrorBody` shape, with `Retry-After` when the client must wait.
fn error_answer(description: &str, retry_after: bool) -> Answer {
    let answer = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    let answer = if retry_after {
        answer.header(
            "retry-after",
            HeaderBuilder::new()
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Integer),
                ))
                .description(Some("Seconds to wait"))
                .build(),
        )
    } else {
        answer
    };
    answer.build()
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document() -> Arc<str> {
    static DOC: OnceLock<Arc<str>> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut text = ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"the OpenAPI document: {e}\"}}"));
        text.push('\n');
        text.into()
    })
    .clone()
}

/// This document (OpenAPI 3.1), generated from the code.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn openapi_json(caller: Caller) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    Ok(([(CONTENT_TYPE, "application/json")], document().to_string()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is what the code builds. `RUNBOOKD_BLESS=1` writes it instead.
    #[test]
    fn docs_openapi_json_is_what_the_code_builds() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let built = document();
        if std::env::var_os("RUNBOOKD_BLESS").is_some() {
            std::fs::write(&path, built.as_bytes()).expect("write docs/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == *built,
            "docs/openapi.json differs from what the code builds; regenerate it with \
             `RUNBOOKD_BLESS=1 cargo test --lib api::openapi` and commit it"
        );
    }

    /// Every operation but the probes and Slack's names its role, and has the bearer
    /// requirement and auth answers that go with it.
    #[test]
    fn every_api_operation_names_its_role() {
        let doc: serde_json::Value =
            serde_json::from_str(&document()).expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                seen += 1;
                let role = op["x-runbookd-role"].as_str();
                if !path.starts_with("/api/") {
                    assert!(role.is_none(), "{method} {path} is a probe: open");
                    continue;
                }
                let role = role.unwrap_or_else(|| panic!("{method} {path} names no role"));
                if role == "slack-signature" {
                    assert!(op.get("security").is_none());
                    continue;
                }
                assert!(matches!(role, "viewer" | "operator" | "ingest"), "{role}");
                assert_eq!(op["security"][0]["bearer"], serde_json::json!([]));
                for status in ["400", "401", "403", "429", "503"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
        assert_eq!(seen, routes().len(), "one operation per route");
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
            .flat_map(|item| item.as_object().into_iter().flat_map(|m| m.values()))
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        ids.sort_unstable();
        let all = ids.len();
        ids.dedup();
        assert_eq!(
            (ids.len(), all),
            (seen, seen),
            "one unique operationId each: {ids:?}"
        );
    }

    /// Every route the code serves (`api::routes()` and the probes), read from the source
    /// that registers them: a route added without a `#[utoipa::path]` fails here.
    fn routes() -> Vec<(String, String)> {
        let source = [include_str!("mod.rs"), include_str!("../http/router.rs")].concat();
        source
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".route(\""))
            .map(|rest| {
                let (path, rest) = rest.split_once('"').expect("route path");
                let method = rest.trim_start_matches([',', ' ']).split('(').next();
                (method.expect("method").to_string(), path.to_string())
            })
            .collect()
    }

    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value =
            serde_json::from_str(&document()).expect("the document is JSON");
        let routes = routes();
        assert!(routes.len() > 20, "{routes:?}");
        for (method, path) in routes {
            assert!(
                doc["paths"][&path].get(&method).is_some(),
                "{method} {path} is served but not in the OpenAPI document: give its handler \
                 a #[utoipa::path] and list it in ApiDoc"
            );
        }
    }
}
