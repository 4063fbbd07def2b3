//! `w.alert(name, #{ … })`: an alert with labels and annotations, as Alertmanager sends it.

use rhai::{Array, EvalAltResult, Map};
use serde_json::Value;

use super::{fail, runs_array, sim_err, World};

impl World {
    /// `w.alert(name, #{ status, labels: #{…}, annotations: #{…} })`.
    pub(super) fn alert_opts(&self, name: &str, opts: Map) -> Result<Array, Box<EvalAltResult>> {
        for k in opts.keys() {
            if !matches!(k.as_str(), "status" | "labels" | "annotations") {
                return Err(fail(format!(
                    "alert: unknown option `{k}` (status, labels, annotations)"
                )));
            }
        }
        let status = match opts.get("status") {
            None => "firing".to_string(),
            Some(v) => v
                .clone()
                .into_string()
                .map_err(|_| fail("alert: status must be \"firing\" or \"resolved\""))?,
        };
        let value = |k: &str| -> Result<Value, Box<EvalAltResult>> {
            match opts.get(k) {
                None => Ok(Value::Object(Default::default())),
                Some(v) if v.is_map() => rhai::serde::from_dynamic(v),
                Some(_) => Err(fail(format!("alert: {k} must be a map"))),
            }
        };
        let runs = self
            .0
            .alert_with(name, &status, value("labels")?, value("annotations")?)
            .map_err(sim_err)?;
        runs_array(&runs)
    }
}
