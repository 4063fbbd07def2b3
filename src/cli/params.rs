//! `--param key=value`, as `runbookd run` and `runbookd trigger` read it.

use anyhow::Context;
use serde_json::{Map, Value};

/// The parameters as a map; a value is read as JSON when it parses (`limit=5` is a
/// number, `env=prod` a string).
pub fn parse_params(raw: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut params = Map::new();
    for p in raw {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param `{p}` must look like key=value"))?;
        if k.is_empty() {
            anyhow::bail!("--param `{p}` has an empty key");
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        params.insert(k.to_string(), value);
    }
    Ok(params)
}
