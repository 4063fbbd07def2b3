//! Integration tests: the real `runbookd` binary on a free port, real HTTP, real SQLite
//! and PostgreSQL. One test binary (modules below) keeps link time down.

mod alertmanager_e2e;
mod alerts;
mod api;
mod approvals;
mod breaker;
mod browser;
mod cli;
mod closed_loop;
mod cron;
mod dashboard;
mod escalation;
mod fake_loki;
mod fake_statuspage;
mod fake_stripe;
mod faults;
mod helpers;
mod key_metrics;
mod lifecycle;
mod notify;
mod outage;
mod parity;
mod payments;
mod reconcile;
mod reload;
mod retention;
mod sandbox;
mod sim_runs;
mod simulate;
mod slack_approvals;
mod statuspage;
mod stripe;
mod webhook_probe;
mod worker_logs;
mod world;
