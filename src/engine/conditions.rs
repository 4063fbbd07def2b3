//! Escalation conditions: small Rhai expressions over an incident (`age` in seconds,
//! `facts`, `level`, `status`, `alert` — the alert name that opened it — and its `labels`),
//! compiled once per table load. No primitives, tight limits.

use std::sync::{Arc, OnceLock};

use rhai::{Dynamic, Engine, Scope, AST};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut e = Engine::new();
        e.set_max_operations(10_000);
        e.set_max_call_levels(8);
        e.set_max_expr_depths(32, 16);
        e.set_max_string_size(4096);
        e.disable_symbol("eval");
        e
    })
}

/// A condition that does not compile or cannot be evaluated, naming it.
#[derive(Debug, thiserror::Error)]
pub enum ConditionError {
    #[error("condition `{source_text}`: {message}")]
    Compile {
        source_text: String,
        message: String,
    },
    #[error("condition `{source_text}`: {message}")]
    Eval {
        source_text: String,
        message: String,
    },
}

/// A compiled condition.
#[derive(Clone)]
pub struct Condition {
    source: String,
    ast: Arc<AST>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Condition {
    /// Compiles `source`; the error names the position.
    pub fn compile(source: &str) -> Result<Condition, ConditionError> {
        let ast = engine()
            .compile_expression(source)
            .map_err(|e| ConditionError::Compile {
                source_text: source.to_string(),
                message: e.to_string(),
            })?;
        Ok(Condition {
            source: source.to_string(),
            ast: Arc::new(ast),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against an incident. A missing fact reads as `()`, so `facts.x == true` is
    /// simply false until a playbook sets it.
    pub fn holds(
        &self,
        age_seconds: f64,
        facts: &serde_json::Value,
        level: &str,
        status: &str,
        labels: &serde_json::Value,
    ) -> Result<bool, ConditionError> {
        let failed = |message: String| ConditionError::Eval {
            source_text: self.source.clone(),
            message,
        };
        let mut scope = Scope::new();
        scope.push("age", age_seconds);
        let alert = labels["alertname"].as_str().unwrap_or("").to_string();
        scope.push("alert", alert);
        let labels: Dynamic = rhai::serde::to_dynamic(labels).map_err(|e| failed(e.to_string()))?;
        scope.push("labels", labels);
        let facts: Dynamic = rhai::serde::to_dynamic(facts).map_err(|e| failed(e.to_string()))?;
        scope.push("facts", facts);
        scope.push("level", level.to_string());
        scope.push("status", status.to_string());
        engine()
            .eval_ast_with_scope::<bool>(&mut scope, &self.ast)
            .map_err(|e| failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_age_facts_and_level() {
        let c = Condition::compile("age > 30.0 * 60.0").expect("compiles");
        assert!(!c
            .holds(100.0, &json!({}), "", "open", &json!({}))
            .expect("evaluates"));
        assert!(c
            .holds(1801.0, &json!({}), "", "open", &json!({}))
            .expect("evaluates"));
        let c = Condition::compile("facts.data_inconsistency == true").expect("compiles");
        assert!(!c
            .holds(0.0, &json!({}), "", "open", &json!({}))
            .expect("missing fact is false"));
        assert!(c
            .holds(
                0.0,
                &json!({"data_inconsistency": true}),
                "",
                "open",
                &json!({})
            )
            .expect("evaluates"));
        assert!(Condition::compile("age >").is_err());
        assert!(Condition::compile("1 + 1")
            .expect("compiles")
            .holds(0.0, &json!({}), "", "", &json!({}))
            .is_err());
    }

    #[test]
    fn reads_the_alert_that_opened_the_incident() {
        let c = Condition::compile("age > 3600.0 && alert == \"PaymentProcessorDown\"")
            .expect("compiles");
        let down = json!({"alertname": "PaymentProcessorDown", "service": "payments"});
        let pending = json!({"alertname": "PaymentsPendingTooLong"});
        assert!(c
            .holds(3601.0, &json!({}), "", "open", &down)
            .expect("eval"));
        assert!(!c
            .holds(3601.0, &json!({}), "", "open", &pending)
            .expect("eval"));
        let by_label = Condition::compile("labels.service == \"payments\"").expect("compiles");
        assert!(by_label
            .holds(0.0, &json!({}), "", "open", &down)
            .expect("eval"));
    }
}
