//! What Stripe says each stale payment should become.

use std::collections::BTreeMap;

use super::{Options, Services};
use crate::primitives::{
    payments::Payment,
    stripe::{IntentSummary, StripeCallError},
};

pub(super) enum Decision {
    Set {
        to: String,
        pi: Option<IntentSummary>,
        reason: String,
    },
    Keep,
    Inconsistent(String),
}

fn decide_from_intent(pi: IntentSummary, mapping: &BTreeMap<String, String>) -> Decision {
    match mapping.get(&pi.status) {
        Some(to) => Decision::Set {
            to: to.clone(),
            reason: format!("Stripe PaymentIntent {} is {}", pi.id, pi.status),
            pi: Some(pi),
        },
        None => Decision::Keep,
    }
}

pub(super) async fn breaker_blocks(services: &Services, name: &str) -> Option<String> {
    match services.breakers.read(name).await {
        Ok(s) if s.state == "open" => Some(format!(
            "breaker {name} is open{}: Stripe is not being called; reconcile again once it is half-open or closed",
            s.seconds_since_open
                .map(|t| format!(" (opened {t:.0} s ago)"))
                .unwrap_or_default()
        )),
        _ => None,
    }
}

pub(super) async fn decide(
    services: &Services,
    p: &Payment,
    opts: &Options,
) -> Result<Decision, StripeCallError> {
    let stripe = &services.stripe;
    match &p.processor_ref {
        Some(r) => match stripe.payment_intent(r).await {
            Ok(Some(pi)) => Ok(decide_from_intent(pi, &opts.mapping)),
            Ok(None) => Ok(Decision::Inconsistent(format!(
                "processor_ref {r} is unknown to Stripe"
            ))),
            Err(e) => Err(e),
        },
        None => match stripe.intents_for_payment(&p.id).await {
            Err(e) => Err(e),
            Ok(list) if list.is_empty() => Ok(Decision::Set {
                to: "failed".into(),
                pi: None,
                reason: "no PaymentIntent in Stripe carries this payment's metadata.payment_id: it was never charged".into(),
            }),
            Ok(mut list) => {
                if let Some(i) = list.iter().position(|pi| pi.status == "succeeded") {
                    Ok(decide_from_intent(list.swap_remove(i), &opts.mapping))
                } else {
                    list.sort_by_key(|pi| std::cmp::Reverse(pi.created));
                    Ok(decide_from_intent(list.swap_remove(0), &opts.mapping))
                }
            }
        },
    }
}
