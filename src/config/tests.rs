//! Configuration tests: the shipped examples load, bad keys and values are named.

use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_need_no_file() {
    let c = Config::load(None, env(&[])).expect("defaults load");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8765");
    assert_eq!(c.state.database_url, "sqlite://runbookd.db");
    assert_eq!(c.playbooks.timeout, Duration::from_secs(300));
    assert_eq!(c.playbooks.max_concurrent_runs, 16);
}

#[test]
fn env_overrides_file_and_parses_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.toml");
    std::fs::write(
        &path,
        "[playbooks]\ntimeout = \"10s\"\nmax_concurrent_runs = 2\n",
    )
    .expect("write");
    let c = Config::load(
        Some(&path),
        env(&[
            ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS", "7"),
            ("RUNBOOKD_SERVER__LISTEN", "127.0.0.1:9999"),
            ("RUNBOOKD_UNRELATED", "x"),
        ]),
    )
    .expect("load");
    assert_eq!(c.playbooks.timeout, Duration::from_secs(10));
    assert_eq!(c.playbooks.max_concurrent_runs, 7);
    assert_eq!(c.server.listen.port(), 9999);
}

#[test]
fn unknown_key_is_named() {
    let err = Config::load(None, env(&[("RUNBOOKD_PLAYBOOKS__TIMEOUTT", "5s")]))
        .expect_err("unknown key must fail");
    let msg = err.to_string();
    assert!(msg.contains("timeoutt"), "{msg}");
}

#[test]
fn bad_value_is_named_with_path() {
    let err = Config::load(None, env(&[("RUNBOOKD_PLAYBOOKS__TIMEOUT", "soon")]))
        .expect_err("bad duration must fail");
    let msg = err.to_string();
    assert!(msg.contains("playbooks.timeout"), "{msg}");
    assert!(msg.contains("soon"), "{msg}");
}

#[test]
fn the_example_config_documents_valid_keys() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/runbookd.toml");
    let c = Config::load(Some(&path), env(&[])).expect("examples/runbookd.toml loads");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8765");
    assert_eq!(c.breakers["stripe"].failure_threshold, 5);
    assert_eq!(c.stripe.max_requests_per_second, 25);
    assert_eq!(c.stripe.max_connections, 32);
    assert_eq!(c.key_metrics.failure_window, Duration::from_secs(300));
    assert_eq!(
        c.playbooks.settings["outage"]["reset_budget"].as_integer(),
        Some(2)
    );
}

#[test]
fn the_debtflow_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/debtflow/runbookd.toml");
    // Its database URLs hold passwords: they come from the environment (docs/install.md's
    // /etc/runbookd/env). No other test reads these two variables.
    std::env::set_var(
        "RUNBOOKD_STATE_DATABASE_URL",
        "postgres://runbookd:pw@db.internal/runbookd",
    );
    std::env::set_var(
        "RUNBOOKD_PAYMENTS_DATABASE_URL",
        "postgres://runbookd_payments:pw@db.internal/debtflow",
    );
    let c = Config::load(Some(&path), env(&[])).expect("examples/debtflow/runbookd.toml loads");
    assert_eq!(
        c.state.database_url,
        "postgres://runbookd:pw@db.internal/runbookd"
    );
    assert!(c.statuspage.page_id.is_some() && c.logs.loki_url.is_some());
    assert_eq!(c.breakers["stripe"].preset, BreakerPreset::Django);
    assert_eq!(c.server.tokens.len(), 3);
    assert!(c.channels.contains_key("oncall"));
}

#[test]
fn urls_with_passwords_can_come_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("state-url");
    std::fs::write(&secret, "postgres://runbookd:s3cret@db/state\n").expect("write");
    let cfg = dir.path().join("runbookd.toml");
    std::fs::write(
        &cfg,
        format!("[state]\ndatabase_url_file = \"{}\"\n", secret.display()),
    )
    .expect("write");
    let c = Config::load(Some(&cfg), env(&[])).expect("loads");
    assert_eq!(c.state.database_url, "postgres://runbookd:s3cret@db/state");
    std::fs::write(
        &cfg,
        format!(
            "[redis]\nurl = \"redis://a\"\nurl_file = \"{}\"\n",
            secret.display()
        ),
    )
    .expect("write");
    let e = Config::load(Some(&cfg), env(&[])).expect_err("both");
    assert!(e.to_string().contains("redis.url"), "{e}");
}

#[test]
fn sql_identifiers_are_validated() {
    assert!(valid_sql_identifier("payments_payment"));
    assert!(valid_sql_identifier("app.payments_payment"));
    for bad in ["", "1x", "a;drop table x", "a b", "a.b.c", "\"x\""] {
        assert!(!valid_sql_identifier(bad), "{bad}");
    }
    let err =
        Config::load(None, env(&[("RUNBOOKD_PAYMENTS__TABLE", "x; drop")])).expect_err("must fail");
    assert!(err.to_string().contains("payments.table"), "{err}");
}

#[test]
fn token_needs_one_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.toml");
    std::fs::write(
        &path,
        "[[server.tokens]]\nname = \"am\"\nrole = \"ingest\"\n",
    )
    .expect("write");
    let err = Config::load(Some(&path), env(&[])).expect_err("must fail");
    assert!(err.to_string().contains("server.tokens[0]"), "{err}");
}

#[test]
fn stripe_needs_at_least_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.toml");
    std::fs::write(&path, "[stripe]\nmax_connections = 0\n").expect("write");
    let e = Config::load(Some(&path), env(&[])).expect_err("no connection is no Stripe");
    assert!(e.to_string().contains("stripe.max_connections"), "{e}");
}

#[test]
fn the_old_memory_preset_names_its_replacement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.toml");
    std::fs::write(&path, "[breakers.stripe]\npreset = \"memory\"\n").expect("write");
    let e = Config::load(Some(&path), env(&[])).expect_err("memory is no preset");
    let text = e.to_string();
    assert!(text.contains("breakers.stripe.preset"), "{text}");
    assert!(text.contains("store = \"memory\""), "{text}");
    std::fs::write(
        &path,
        "[breakers.stripe]\nstore = \"memory\"\npreset = \"plain\"\n",
    )
    .expect("write");
    let c = Config::load(Some(&path), env(&[])).expect("store = memory loads");
    assert_eq!(c.breakers["stripe"].store, BreakerStoreKind::Memory);
}

#[test]
fn celery_keys_are_checked_and_the_broker_url_is_never_echoed() {
    let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs));
    let c =
        load(&[("RUNBOOKD_CELERY__QUEUES", "[\"payments\", \"celery\"]")]).expect("queues load");
    assert_eq!(c.celery.payment_queues(), ["payments", "celery"]);
    assert_eq!(
        Config::default().celery.payment_queues(),
        ["celery"],
        "without queues, the queue tasks are sent to"
    );
    let secret = "sentinel://:hunter2@sentinel:26379";
    let e = load(&[("RUNBOOKD_CELERY__BROKER_URL", secret)]);
    let e = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("celery.broker_url") && e.contains("redis://"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    for (key, value) in [
        ("RUNBOOKD_CELERY__INSPECT_TIMEOUT", "0s"),
        ("RUNBOOKD_CELERY__INSPECT_TIMEOUT", "1m"),
        ("RUNBOOKD_CELERY__CONTROL_EXCHANGE", "has space"),
    ] {
        assert!(load(&[(key, value)]).is_err(), "{key}={value} accepted");
    }
}

#[test]
fn the_old_size_limits_still_load_but_are_named_as_no_longer_read() {
    let c = Config::load(
        None,
        env(&[
            ("RUNBOOKD_PLAYBOOKS__MAX_ARRAY_SIZE", "100000"),
            ("RUNBOOKD_PLAYBOOKS__MAX_RUN_MEMORY", "16777216"),
        ]),
    )
    .expect("loads");
    assert_eq!(c.playbooks.max_run_memory, 16 << 20);
    let ignored = c.playbooks.ignored_keys();
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(
        ignored[0].contains("max_array_size is no longer read")
            && ignored[0].contains("max_run_memory"),
        "{ignored:?}"
    );
    assert!(Config::load(None, env(&[]))
        .expect("defaults")
        .playbooks
        .ignored_keys()
        .is_empty());
    let err = Config::load(None, env(&[("RUNBOOKD_PLAYBOOKS__MAX_RUN_MEMORY", "1000")]))
        .expect_err("too small")
        .to_string();
    assert!(err.contains("playbooks.max_run_memory"), "{err}");
    Config::load(None, env(&[("RUNBOOKD_PLAYBOOKS__MAX_RUN_MEMORY", "0")])).expect("0 = no limit");
}
