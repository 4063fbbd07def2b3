//! The simulated world's implementations of production's backend traits:
//! [`crate::primitives::payments::PaymentsBackend`] (its rows, [`payments`]),
//! [`crate::primitives::stripe::wire::StripeWire`] and
//! [`crate::primitives::webhooks::WebhookEndpoint`] (its Stripe and the app's endpoint,
//! [`stripe`]), and
//! [`crate::primitives::statuspage::StatusPageBackend`] (the users' status page,
//! [`statuspage`]), and
//! [`crate::primitives::logs::LogsBackend`] (its workers' log lines, [`logs`]), and
//! [`crate::primitives::celery::Broker`] (its Celery workers and queues, [`celery`]). Breakers need none of their own: the world keeps them in production's
//! memory store.

pub mod celery;
pub mod logs;
mod payments;
pub mod statuspage;
pub mod stripe;
