//! The state store's schema, migration by migration: applied by runbookd itself at start,
//! in order, on SQLite and PostgreSQL alike (CHANGELOG.md says which take locks).

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

/// The migrations, in order. Migrations 12 and 13 exist on PostgreSQL only (a function of
/// the ingester's and its lock wait); SQLite records them as done with nothing to do.
pub(super) fn migrator(backend: Backend) -> Migrator {
    Migrator {
        migrations: Cow::Owned(vec![
            Migration::new(
                1,
                Cow::Borrowed("runs and audit"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0001_runs_and_audit.sql")),
                false,
            ),
            Migration::new(
                2,
                Cow::Borrowed("incidents and alerts"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0002_incidents_and_alerts.sql")),
                false,
            ),
            Migration::new(
                3,
                Cow::Borrowed("cron marks"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0003_cron_marks.sql")),
                false,
            ),
            Migration::new(
                4,
                Cow::Borrowed("notification outbox"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0004_outbox.sql")),
                false,
            ),
            Migration::new(
                5,
                Cow::Borrowed("escalation fires"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0005_escalation.sql")),
                false,
            ),
            Migration::new(
                6,
                Cow::Borrowed("remediation budgets"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0006_budgets.sql")),
                false,
            ),
            Migration::new(
                7,
                Cow::Borrowed("replica leases and run attempts"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0007_leases.sql")),
                false,
            ),
            Migration::new(
                8,
                Cow::Borrowed("approvals"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0008_approvals.sql")),
                false,
            ),
            Migration::new(
                9,
                Cow::Borrowed("retention indexes"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0009_retention.sql")),
                false,
            ),
            Migration::new(
                10,
                Cow::Borrowed("dashboard sessions, incident indexes"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0010_sessions.sql")),
                false,
            ),
            Migration::new(
                11,
                Cow::Borrowed("history indexes"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0011_history_indexes.sql")),
                false,
            ),
            Migration::new(
                12,
                Cow::Borrowed("ingest locks and lookup in one call"),
                MigrationType::Simple,
                Cow::Borrowed(match backend {
                    Backend::Postgres => include_str!("migrations/0012_ingest_locks.postgres.sql"),
                    Backend::Sqlite => "SELECT 1;",
                }),
                false,
            ),
            Migration::new(
                13,
                Cow::Borrowed("ingest lock wait bounded"),
                MigrationType::Simple,
                Cow::Borrowed(match backend {
                    Backend::Postgres => {
                        include_str!("migrations/0013_ingest_lock_timeout.postgres.sql")
                    }
                    Backend::Sqlite => "SELECT 1;",
                }),
                false,
            ),
            Migration::new(
                14,
                Cow::Borrowed("ingest lock function planned once per session"),
                MigrationType::Simple,
                Cow::Borrowed(match backend {
                    Backend::Postgres => {
                        include_str!("migrations/0014_ingest_lock_generic_plan.postgres.sql")
                    }
                    Backend::Sqlite => "SELECT 1;",
                }),
                false,
            ),
            Migration::new(
                15,
                Cow::Borrowed("approvals by the run that used them"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0015_approvals_by_using_run.sql")),
                false,
            ),
            Migration::new(
                16,
                Cow::Borrowed("outbox claims name their replica"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!(
                    "migrations/0016_outbox_claims_name_their_replica.sql"
                )),
                false,
            ),
            Migration::new(
                17,
                Cow::Borrowed("run recordings"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("migrations/0017_run_recordings.sql")),
                false,
            ),
        ]),
        ..Migrator::DEFAULT
    }
}
