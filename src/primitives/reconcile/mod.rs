//! `reconcile()`: every stale pending payment checked against Stripe and settled — the
//! runbook's Scenario 4 and the app's own hourly task, done more safely:
//!
//! - a pending payment without `processor_ref` is looked up in Stripe by its
//!   `metadata.payment_id` before anything is decided (the app marks it failed blindly,
//!   which loses a charge when a worker died after Stripe created the PaymentIntent);
//! - each update is a compare-and-set on the old status, so a webhook landing meanwhile wins;
//! - requests go out concurrently but under `stripe.max_requests_per_second`, and only
//!   while the breaker allows (open ⇒ stop and say why);
//! - charged-in-Stripe-but-failed-here and unknown `processor_ref`s are reported as
//!   inconsistencies (the runbook's L3), never "fixed" silently.
//!
//! Running it twice changes nothing the second time.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::{stream, StreamExt};
use serde::Serialize;

use super::{
    payments::{Payment, PaymentsError},
    stripe::IntentSummary,
    ActionOutcome, ActionRecord, Services,
};
use crate::store::{NewAudit, Store};

mod decide;
mod script;

use decide::{breaker_blocks, decide, Decision};
pub use script::register;

/// Why a reconcile could not start: the payments it would check cannot be read. (A
/// payment Stripe cannot answer for is a finding in the report, not an error.)
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Payments(#[from] PaymentsError),
}

/// How to reconcile.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pending for longer than this is stale (the app: 30 min).
    pub older_than: Duration,
    /// At most this many payments per call (the app: 100).
    pub limit: i64,
    /// Payments checked at once (requests still obey the rate limit).
    pub concurrency: usize,
    /// Breaker consulted before each request; `None` to ignore breakers.
    pub breaker: Option<String>,
    /// Stripe PaymentIntent status → our status; unmapped statuses stay pending.
    pub mapping: BTreeMap<String, String>,
    /// Also look at payments failed within this window for charges Stripe did take.
    pub check_failed_within: Option<Duration>,
    pub dry_run: bool,
    /// Decide every change but make none (and audit none): the plan a human approves
    /// before [`apply_plan`] makes exactly those changes.
    pub plan: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            older_than: Duration::from_secs(30 * 60),
            limit: 100,
            concurrency: 8,
            breaker: Some("stripe".into()),
            mapping: default_mapping(),
            check_failed_within: Some(Duration::from_secs(24 * 3600)),
            dry_run: false,
            plan: false,
        }
    }
}

/// The app's own mapping (DOMAIN.md).
pub fn default_mapping() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("succeeded".into(), "completed".into()),
        ("canceled".into(), "failed".into()),
        ("requires_payment_method".into(), "failed".into()),
    ])
}

/// One settled (or, in a dry run, settleable) payment.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Change {
    pub payment_id: String,
    pub from: String,
    pub to: String,
    pub payment_intent: Option<String>,
    pub stripe_status: Option<String>,
    pub reason: String,
    /// False in a dry run or a plan, or when a webhook changed the payment first.
    #[serde(default)]
    pub applied: bool,
}

/// Something a human must look at, or an error checking one payment.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Finding {
    pub payment_id: String,
    pub kind: String,
    pub detail: String,
}

/// What reconciliation found and did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct Report {
    pub dry_run: bool,
    pub checked: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Updates lost to a concurrent change (a webhook got there first).
    pub superseded: usize,
    pub changes: Vec<Change>,
    pub inconsistencies: Vec<Finding>,
    pub errors: Vec<Finding>,
    /// Why it stopped early (breaker open), if it did.
    pub stopped: Option<String>,
    /// Payments not looked at because it stopped.
    pub not_checked: usize,
}

/// Who to attribute audit entries to.
pub struct Auditor {
    pub store: Option<Store>,
    pub run_id: Option<String>,
    pub actor: String,
    /// The run's lease: once it may have lapsed, no payment is changed any more.
    pub fence: Option<std::sync::Arc<crate::store::Fence>>,
}

impl Auditor {
    /// The changes stop here: the run's lease may have lapsed (another replica may be
    /// reconciling the same payments under the run's next attempt).
    fn fenced(&self, payment_id: &str) -> Option<Finding> {
        self.fence
            .as_ref()
            .is_some_and(|f| f.lapsed())
            .then(|| Finding {
                payment_id: payment_id.to_string(),
                kind: "lease_lapsed".into(),
                detail: "not changed: this replica's lease may have lapsed".into(),
            })
    }
}

/// What became of one payment.
enum Outcome {
    NotChecked,
    Unchanged,
    Inconsistent(Finding),
    Error(Finding),
    Changed(Change),
}

fn finding(p: &Payment, kind: &str, detail: String) -> Finding {
    Finding {
        payment_id: p.id.clone(),
        kind: kind.into(),
        detail,
    }
}

/// Applies one decided change (compare-and-set on the status read) and audits it.
async fn settle(
    services: &Services,
    auditor: &Auditor,
    opts: &Options,
    p: &Payment,
    to: String,
    pi: Option<IntentSummary>,
    reason: String,
) -> Outcome {
    let reason = format!("reconciled by runbookd: {reason}");
    let applied = if opts.dry_run || opts.plan {
        false
    } else {
        if let Some(fenced) = auditor.fenced(&p.id) {
            return Outcome::Error(fenced);
        }
        let set = async {
            services
                .payments
                .backend()?
                .set_status(&p.id, &p.status, &to, &reason)
                .await
        };
        match set.await {
            // false: a webhook changed it first, and that change stands.
            Ok(applied) => applied,
            Err(e) => return Outcome::Error(finding(p, "database_error", e.to_string())),
        }
    };
    let change = Change {
        payment_id: p.id.clone(),
        from: p.status.clone(),
        to,
        payment_intent: pi.as_ref().map(|pi| pi.id.clone()),
        stripe_status: pi.as_ref().map(|pi| pi.status.clone()),
        reason,
        applied,
    };
    if applied || (opts.dry_run && !opts.plan) {
        audit_change(auditor, &change, opts.dry_run).await;
    }
    Outcome::Changed(change)
}

/// Makes exactly the changes of an approved plan, each a compare-and-set on the status the
/// plan read (a payment that changed since — a webhook, the app — keeps its new status and
/// counts as superseded), each audited. Stripe is not asked again: the plan is what a human
/// approved.
pub async fn apply_plan(
    services: &Services,
    auditor: &Auditor,
    changes: Vec<Change>,
    dry_run: bool,
) -> Report {
    let mut report = Report {
        dry_run,
        ..Default::default()
    };
    for mut change in changes {
        report.checked += 1;
        if dry_run {
            audit_change(auditor, &change, true).await;
            report.changes.push(change);
            continue;
        }
        if let Some(fenced) = auditor.fenced(&change.payment_id) {
            report.errors.push(fenced);
            report.changes.push(change);
            continue;
        }
        let set = async {
            services
                .payments
                .backend()?
                .set_status(&change.payment_id, &change.from, &change.to, &change.reason)
                .await
        };
        match set.await {
            Ok(true) => {
                change.applied = true;
                report.updated += 1;
                audit_change(auditor, &change, false).await;
            }
            Ok(false) => report.superseded += 1,
            Err(e) => report.errors.push(Finding {
                payment_id: change.payment_id.clone(),
                kind: "database_error".into(),
                detail: e.to_string(),
            }),
        }
        report.changes.push(change);
    }
    report
}

/// Reconciles stale pending payments; see the module docs.
pub async fn reconcile(
    services: &Services,
    opts: &Options,
    auditor: &Auditor,
) -> Result<Report, ReconcileError> {
    let payments = &services.payments;
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if let Some(name) = &opts.breaker {
        if let Some(why) = breaker_blocks(services, name).await {
            report.stopped = Some(why);
            return Ok(report);
        }
    }
    let stale = async {
        payments
            .backend()?
            .stale_pending(opts.older_than, None, opts.limit)
            .await
    }
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped_why = Arc::new(Mutex::new(None::<String>));
    // Each payment is settled as soon as Stripe has answered for it, not after the whole
    // batch: a reconcile cut short by the run's deadline keeps every update it made.
    let outcomes: Vec<Outcome> = stream::iter(stale)
        .map(|p| {
            let stop = stop.clone();
            let stopped_why = stopped_why.clone();
            async move {
                if stop.load(Ordering::Acquire) {
                    return Outcome::NotChecked;
                }
                if let Some(name) = &opts.breaker {
                    if let Some(why) = breaker_blocks(services, name).await {
                        stop.store(true, Ordering::Release);
                        *stopped_why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                        return Outcome::NotChecked;
                    }
                }
                match decide(services, &p, opts).await {
                    Err(e) => Outcome::Error(finding(&p, "stripe_error", e.to_string())),
                    Ok(Decision::Keep) => Outcome::Unchanged,
                    Ok(Decision::Inconsistent(detail)) => {
                        Outcome::Inconsistent(finding(&p, "unknown_processor_ref", detail))
                    }
                    Ok(Decision::Set { to, pi, reason }) => {
                        settle(services, auditor, opts, &p, to, pi, reason).await
                    }
                }
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    report.stopped = stopped_why.lock().unwrap_or_else(|e| e.into_inner()).take();
    for outcome in outcomes {
        if !matches!(outcome, Outcome::NotChecked) {
            report.checked += 1;
        }
        match outcome {
            Outcome::NotChecked => report.not_checked += 1,
            Outcome::Unchanged => report.unchanged += 1,
            Outcome::Error(f) => report.errors.push(f),
            Outcome::Inconsistent(f) => {
                report.unchanged += 1;
                report.inconsistencies.push(f);
            }
            Outcome::Changed(change) => {
                if change.applied {
                    report.updated += 1;
                } else if !opts.dry_run && !opts.plan {
                    report.superseded += 1;
                }
                report.changes.push(change);
            }
        }
    }
    if let Some(window) = opts.check_failed_within {
        if report.stopped.is_none() {
            check_failed(services, window, opts, &mut report).await;
        }
    }
    Ok(report)
}

/// The runbook's L3 condition: charged in Stripe, recorded as failed here.
async fn check_failed(services: &Services, window: Duration, opts: &Options, report: &mut Report) {
    let failed = match async {
        services
            .payments
            .backend()?
            .recent_failures(window, opts.limit)
            .await
    }
    .await
    {
        Ok(f) => f,
        Err(e) => {
            report.errors.push(Finding {
                payment_id: String::new(),
                kind: "database_error".into(),
                detail: e.to_string(),
            });
            return;
        }
    };
    let found: Vec<Option<Finding>> =
        stream::iter(failed.into_iter().filter(|p| p.processor_ref.is_some()))
            .map(|p| async move {
                let r = p.processor_ref.clone().unwrap_or_default();
                match services.stripe.payment_intent(&r).await {
                    Ok(Some(pi)) if pi.status == "succeeded" => Some(Finding {
                        payment_id: p.id.clone(),
                        kind: "charged_but_failed".into(),
                        detail: format!(
                        "Stripe PaymentIntent {} succeeded ({} {}) but the payment is failed here",
                        pi.id, pi.amount, pi.currency
                    ),
                    }),
                    _ => None,
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
    report.inconsistencies.extend(found.into_iter().flatten());
}

async fn audit_change(auditor: &Auditor, change: &Change, dry_run: bool) {
    let Some(store) = &auditor.store else {
        return;
    };
    let target = format!("payment:{}", change.payment_id);
    let details = ActionRecord {
        action: "payments.set_status",
        target: &target,
        dry_run,
        outcome: ActionOutcome::of(dry_run),
        details: serde_json::to_value(change).unwrap_or_default(),
        result: None,
        error: None,
    }
    .at(store.now());
    let entry = NewAudit {
        actor: auditor.actor.clone(),
        action: "payments.set_status".into(),
        target: format!("payment:{}", change.payment_id),
        run_id: auditor.run_id.clone(),
        dry_run,
        details,
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::error!(payment = %change.payment_id, error = %e, "audit entry not written");
    }
}
