//! The app's broker as kombu's Redis transport lays it out — what Celery itself reads and
//! writes, so runbookd needs no agent beside the app:
//!
//! - a queue is a Redis list; with kombu's default priority steps a message of priority
//!   3, 6 or 9 sits in `<queue>\x06\x16<priority>`, so a queue's depth is the sum of four
//!   `LLEN`s;
//! - a task message is a JSON envelope (`body` base64 of protocol 2's `[args, kwargs,
//!   embed]`) pushed with `LPUSH`, popped by workers with `BRPOP`;
//! - remote control (`celery inspect ping|active|reserved`) is a fanout: the request is
//!   `PUBLISH`ed on `/<db>.<control_exchange>.pidbox` (kombu's `fanout_prefix`), every
//!   worker's pattern subscription hears it, and each answers through the direct exchange
//!   `reply.<control_exchange>.pidbox` — kombu looks up that exchange's bindings in the set
//!   `_kombu.binding.reply.<control_exchange>.pidbox` and `LPUSH`es the reply onto the bound
//!   list. runbookd binds a list of its own for one broadcast, waits on it with `BRPOP`, and
//!   removes both afterwards.
//!
//! `PUBLISH` answers how many subscribers heard the request: the wait ends as soon as each
//! of them has answered every method, and one that heard but never answered (a hung worker)
//! is counted, not hidden.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use redis::AsyncCommands;

use super::{Broadcast, Broker, CeleryError, Reply};
use crate::{clock::Clock, config::CeleryConfig, primitives::redis_conn::RedisConnections};

/// kombu's default `priority_steps` beyond 0: the suffixes of a queue's other lists.
const PRIORITY_STEPS: [u8; 3] = [3, 6, 9];
/// kombu's separator in binding members and priority queue names.
const SEP: &str = "\x06\x16";

/// The app's broker on Redis.
pub struct KombuRedis {
    url: String,
    /// The database of `url`: kombu prefixes fanout channels with it (pub/sub is global).
    db: i64,
    control_exchange: String,
    redis: Arc<RedisConnections>,
    /// Decides a remote-control request's `expires` header (kombu drops it after that).
    clock: Clock,
}

impl KombuRedis {
    /// None when `[celery] broker_url` is unset.
    pub fn from_config(
        cfg: &CeleryConfig,
        redis: Arc<RedisConnections>,
        clock: Clock,
    ) -> Option<Result<KombuRedis, CeleryError>> {
        let url = cfg.broker_url.clone()?;
        let db = match redis::Client::open(url.as_str()) {
            Ok(c) => c.get_connection_info().redis_settings().db(),
            Err(e) => {
                return Some(Err(CeleryError::Broker(format!(
                    "invalid broker URL {}: {e}",
                    crate::redact::redact_url(&url)
                ))))
            }
        };
        Some(Ok(KombuRedis {
            url,
            db,
            control_exchange: cfg.control_exchange.clone(),
            redis,
            clock,
        }))
    }

    fn con(&self) -> Result<redis::aio::ConnectionManager, CeleryError> {
        self.redis.get(&self.url).map_err(CeleryError::from)
    }

    /// A connection of its own for `BRPOP`: blocking the shared one would stall every
    /// breaker read queued behind it.
    async fn waiting_con(
        &self,
        timeout: Duration,
    ) -> Result<redis::aio::MultiplexedConnection, CeleryError> {
        let client = redis::Client::open(self.url.as_str()).map_err(CeleryError::from_redis)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(timeout + Duration::from_secs(2)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(CeleryError::from_redis)
    }

    /// Sends the requests, collects the replies, always unbinds the reply list.
    async fn exchange(
        &self,
        con: &mut redis::aio::ConnectionManager,
        methods: &[&str],
        timeout: Duration,
        oid: &str,
        reply_exchange: &str,
        reply_list: &str,
    ) -> Result<Broadcast, CeleryError> {
        let mut wait = self.waiting_con(timeout).await?;
        let channel = format!("/{}.{}.pidbox", self.db, self.control_exchange);
        let mut by_ticket: HashMap<String, String> = HashMap::new();
        let mut heard_by = 0usize;
        let expires = self.clock.now_seconds() + timeout.as_secs_f64();
        for method in methods {
            let ticket = uuid::Uuid::now_v7().to_string();
            let body = serde_json::json!({
                "method": method,
                "arguments": {},
                "destination": null,
                "pattern": null,
                "matcher": null,
                "ticket": ticket,
                "reply_to": { "exchange": reply_exchange, "routing_key": oid },
            });
            let envelope = serde_json::json!({
                "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": { "expires": expires },
                "properties": {
                    "delivery_mode": 2,
                    "delivery_info": {
                        "exchange": format!("{}.pidbox", self.control_exchange),
                        "routing_key": "",
                    },
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": uuid::Uuid::now_v7().to_string(),
                },
            });
            let heard: i64 = con
                .publish(&channel, envelope.to_string())
                .await
                .map_err(CeleryError::from_redis)?;
            heard_by = heard_by.max(heard.max(0) as usize);
            by_ticket.insert(ticket, method.to_string());
        }
        let mut replies: Vec<Reply> = Vec::new();
        let deadline = Instant::now() + timeout;
        while replies.len() < heard_by * methods.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1) {
                break;
            }
            let popped: Option<(String, String)> = wait
                .brpop(reply_list, left.as_secs_f64())
                .await
                .map_err(CeleryError::from_redis)?;
            let Some((_, payload)) = popped else { break };
            match parse_reply(&payload, &by_ticket) {
                Ok(mut r) => replies.append(&mut r),
                Err(why) => {
                    tracing::warn!(%why, "a Celery remote-control reply was not understood")
                }
            }
        }
        Ok(Broadcast { heard_by, replies })
    }
}

/// The replies in one reply message: `{hostname: value}` for the method of its ticket.
fn parse_reply(payload: &str, by_ticket: &HashMap<String, String>) -> Result<Vec<Reply>, String> {
    let envelope: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("not JSON: {e}"))?;
    let ticket = envelope["headers"]["ticket"].as_str().unwrap_or_default();
    let Some(method) = by_ticket.get(ticket) else {
        return Err(format!("unknown ticket `{ticket}`"));
    };
    let content_type = envelope["content-type"].as_str().unwrap_or_default();
    if content_type != "application/json" {
        return Err(format!("content type `{content_type}` (only JSON is read)"));
    }
    let raw = envelope["body"].as_str().ok_or("no body")?;
    let body = if envelope["properties"]["body_encoding"].as_str() == Some("base64") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| format!("body is not base64: {e}"))?;
        String::from_utf8(bytes).map_err(|e| format!("body is not UTF-8: {e}"))?
    } else {
        raw.to_string()
    };
    let body: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("body is not JSON: {e}"))?;
    let by_worker = body.as_object().ok_or("body is not an object")?;
    Ok(by_worker
        .iter()
        .map(|(worker, value)| Reply {
            method: method.clone(),
            worker: worker.clone(),
            value: value.clone(),
        })
        .collect())
}

#[async_trait::async_trait]
impl Broker for KombuRedis {
    async fn ping(&self) -> Result<(), CeleryError> {
        let mut con = self.con()?;
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .map(|_| ())
            .map_err(CeleryError::from_redis)
    }

    async fn push(&self, queue: &str, message: String) -> Result<(), CeleryError> {
        let mut con = self.con()?;
        let _: i64 = con
            .lpush(queue, message)
            .await
            .map_err(CeleryError::from_redis)?;
        Ok(())
    }

    async fn queue_length(&self, queue: &str) -> Result<i64, CeleryError> {
        let mut con = self.con()?;
        let mut pipe = redis::pipe();
        pipe.llen(queue);
        for p in PRIORITY_STEPS {
            pipe.llen(format!("{queue}{SEP}{p}"));
        }
        let lengths: Vec<i64> = pipe
            .query_async(&mut con)
            .await
            .map_err(CeleryError::from_redis)?;
        Ok(lengths.iter().sum())
    }

    async fn broadcast(
        &self,
        methods: &[&str],
        timeout: Duration,
    ) -> Result<Broadcast, CeleryError> {
        let mut con = self.con()?;
        let oid = uuid::Uuid::now_v7().to_string();
        let reply_exchange = format!("reply.{}.pidbox", self.control_exchange);
        let reply_list = format!("{oid}.{reply_exchange}");
        let bindings = format!("_kombu.binding.{reply_exchange}");
        let binding = format!("{oid}{SEP}{SEP}{reply_list}");
        let _: i64 = con
            .sadd(&bindings, &binding)
            .await
            .map_err(CeleryError::from_redis)?;
        let mut unbind = Unbind {
            con: con.clone(),
            bindings,
            binding,
            reply_list: reply_list.clone(),
            done: false,
        };
        let outcome = self
            .exchange(
                &mut con,
                methods,
                timeout,
                &oid,
                &reply_exchange,
                &reply_list,
            )
            .await;
        unbind.now().await;
        outcome
    }
}

/// Removes a broadcast's reply binding and list — when the broadcast ends, or, when its
/// future is dropped first (a caller's time limit, shutdown), from a task of its own: a
/// binding left behind would make workers push that broadcast's late replies onto a list
/// nobody reads.
struct Unbind {
    con: redis::aio::ConnectionManager,
    bindings: String,
    binding: String,
    reply_list: String,
    done: bool,
}

impl Unbind {
    async fn now(&mut self) {
        self.done = true;
        remove(
            &mut self.con,
            &self.bindings,
            &self.binding,
            &self.reply_list,
        )
        .await;
    }
}

async fn remove(
    con: &mut redis::aio::ConnectionManager,
    bindings: &str,
    binding: &str,
    reply_list: &str,
) {
    let cleanup = redis::pipe()
        .srem(bindings, binding)
        .del(reply_list)
        .query_async::<()>(con)
        .await;
    if let Err(e) = cleanup {
        tracing::warn!(error = %e, binding = %binding, "could not remove runbookd's Celery reply binding");
    }
    // kombu looks a reply's bindings up, then pushes: a worker that read this binding just
    // before it went still pushes its reply, recreating the list after the DEL, and nobody
    // would ever read it (seen in CI: a worker woken from SIGSTOP answering its backlog under
    // load). A second DEL a moment later removes such a list.
    let (mut con, list) = (con.clone(), reply_list.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(LATE_REPLY_GRACE).await;
        let _: redis::RedisResult<i64> = con.del(&list).await;
    });
}

/// How long after a broadcast's cleanup a late reply may still recreate its list.
const LATE_REPLY_GRACE: Duration = Duration::from_secs(1);

impl Drop for Unbind {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let mut con = self.con.clone();
            let (bindings, binding, list) = (
                std::mem::take(&mut self.bindings),
                std::mem::take(&mut self.binding),
                std::mem::take(&mut self.reply_list),
            );
            rt.spawn(async move { remove(&mut con, &bindings, &binding, &list).await });
        }
    }
}

/// Builds the kombu envelope of a protocol-2 task message.
pub fn message(
    task: &str,
    id: &str,
    args: &serde_json::Value,
    kwargs: &serde_json::Value,
    queue: &str,
) -> serde_json::Value {
    let body = serde_json::json!([
        args,
        kwargs,
        { "callbacks": null, "errbacks": null, "chain": null, "chord": null }
    ]);
    let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    serde_json::json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": id,
            "shadow": null,
            "eta": null,
            "expires": null,
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": id,
            "parent_id": null,
            "argsrepr": args.to_string(),
            "kwargsrepr": kwargs.to_string(),
            "origin": format!("runbookd@{host}"),
            "ignore_result": false,
        },
        "properties": {
            "correlation_id": id,
            "reply_to": uuid::Uuid::now_v7().to_string(),
            "delivery_mode": 2,
            "delivery_info": { "exchange": "", "routing_key": queue },
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::now_v7().to_string(),
        }
    })
}
