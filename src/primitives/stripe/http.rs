//! The production wire: Stripe over HTTPS through one pooled client whose connections are
//! capped (`[stripe] max_connections`).
//!
//! Why not reqwest, which the rest of the daemon uses: its pool (hyper-util's) has no
//! per-host cap, and it races every checkout against a new connect. A connection whose
//! answer was just read goes back to the pool from a task of its own, a moment after the
//! caller asks for the next one, so under steady concurrency 32 the pool measured 34–43
//! connections (each a TLS handshake against the real Stripe) and nothing bounds it. Here
//! every connection holds a permit of a semaphore for as long as its socket lives: a connect
//! past the cap waits until a connection closes, and meanwhile the checkout it races takes
//! the first connection handed back. Reqwest's connector cannot carry a permit (its `Conn`
//! is sealed), so the client is hyper-util's own, with the same TLS (rustls, ring, the
//! webpki roots) and the same proxy variables (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, …)
//! reqwest honoured.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT},
    Method, Request, Uri,
};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{
    client::{
        legacy::{
            connect::{proxy::Tunnel, Connected, Connection, HttpConnector},
            Client,
        },
        proxy::matcher::Matcher,
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use secrecy::ExposeSecret;
use stripe_client_core::StripeMethod;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::wire::{HeldKey, StripeWire, Target, WireAnswer, WireError, WireRequest};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an unused connection is kept (Stripe closes idle ones after about two minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Production: Stripe over HTTPS with a pooled client (connections are kept and reused
/// across runs, reconciliation and key-metric probes, and never more than the cap).
pub struct HttpWire {
    client: Client<CappedConnector, Full<Bytes>>,
    api_base: String,
    status_url: String,
    key: HeldKey,
    user_agent: HeaderValue,
}

impl HttpWire {
    /// A wire holding at most `max_connections` sockets to Stripe (at least one).
    pub fn new(api_base: &str, status_url: &str, key: HeldKey, max_connections: u32) -> HttpWire {
        let permits = Arc::new(Semaphore::new(max_connections.max(1) as usize));
        let tls = tls_config();
        let connector = CappedConnector {
            direct: HttpsConnector::from((plain_tcp(), tls.clone())),
            tls,
            proxies: Arc::new(Matcher::from_env()),
            permits,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        HttpWire {
            client,
            api_base: api_base.trim_end_matches('/').to_string(),
            status_url: status_url.to_string(),
            key,
            user_agent: HeaderValue::from_static(concat!("runbookd/", env!("CARGO_PKG_VERSION"))),
        }
    }

    fn request(&self, req: WireRequest) -> Result<Request<Full<Bytes>>, WireError> {
        let mut url = match req.target {
            Target::Api => format!("{}/v1{}", self.api_base, req.path),
            Target::StatusPage => self.status_url.clone(),
        };
        if let Some(q) = &req.query {
            url.push('?');
            url.push_str(q);
        }
        // The URL may carry a query with identifiers: the error names neither.
        let uri: Uri = url
            .parse()
            .map_err(|e| WireError::Connection(format!("invalid Stripe URL: {e}")))?;
        let method = match req.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, self.user_agent.clone());
        let mut body = Bytes::new();
        if req.target == Target::Api {
            if let Some(k) = &self.key.key {
                let mut auth = HeaderValue::from_str(&format!("Bearer {}", k.expose_secret()))
                    .map_err(|_| {
                        WireError::Connection("the Stripe key is not a valid header value".into())
                    })?;
                auth.set_sensitive(true);
                builder = builder
                    .header(AUTHORIZATION, auth)
                    .header("Stripe-Version", stripe_client_core::VERSION.as_str());
            }
            if let Some(key) = &req.idempotency_key {
                builder = builder.header("Idempotency-Key", key.as_str());
            }
            if let Some(form) = req.body {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                body = Bytes::from(form);
            }
        }
        builder
            .body(Full::new(body))
            .map_err(|e| WireError::Connection(format!("invalid Stripe request: {e}")))
    }
}

#[async_trait::async_trait]
impl StripeWire for HttpWire {
    async fn send(&self, req: WireRequest) -> Result<WireAnswer, WireError> {
        let timeout = req.timeout;
        let request = self.request(req)?;
        // One limit for the whole attempt: waiting for a connection under the cap, connecting,
        // the answer and its body.
        let attempt = async {
            let resp = self.client.request(request).await.map_err(classify)?;
            let status = resp.status().as_u16();
            let should_retry = resp
                .headers()
                .get("Stripe-Should-Retry")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| WireError::Connection(chain(&e)))?
                .to_bytes();
            Ok(WireAnswer {
                status,
                should_retry,
                body,
                latency: None,
            })
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(WireError::Timeout))
    }

    fn key(&self) -> HeldKey {
        self.key.clone()
    }
}

/// A client error as the wire reports it, with its causes (hyper's errors name no URL).
fn classify(e: hyper_util::client::legacy::Error) -> WireError {
    WireError::Connection(chain(&e))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// TCP as reqwest set it up: no Nagle delay (a request is one small write, its answer
/// awaited), and URLs of either scheme (TLS is the layer above).
fn plain_tcp() -> HttpConnector {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(c) => Arc::new(c),
        // ring supports every safe default version; this cannot fail with it.
        Err(e) => unreachable!("rustls with ring refused its own defaults: {e}"),
    }
}

/// The connector behind the pool: every socket it makes holds one of `permits` until it
/// closes, so the sockets to Stripe never outnumber them.
#[derive(Clone)]
struct CappedConnector {
    direct: HttpsConnector<HttpConnector>,
    tls: Arc<rustls::ClientConfig>,
    proxies: Arc<Matcher>,
    permits: Arc<Semaphore>,
}

type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

impl tower_service::Service<Uri> for CappedConnector {
    type Response = Held;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Held, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let permits = self.permits.clone();
        let route = match self.proxies.intercept(&dst) {
            None => Route::Direct(self.direct.clone()),
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), plain_tcp());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Route::Tunnel(HttpsConnector::from((tunnel, self.tls.clone())))
            }
        };
        Box::pin(async move {
            let permit = permits.acquire_owned().await?;
            let io = match route {
                Route::Direct(mut c) => tower_service::Service::call(&mut c, dst).await?,
                Route::Tunnel(mut c) => tower_service::Service::call(&mut c, dst).await?,
            };
            Ok(Held {
                io,
                _permit: permit,
            })
        })
    }
}

/// How a connection reaches Stripe: straight, or through the proxy the environment names
/// (an HTTP `CONNECT` tunnel; TLS to Stripe inside it).
enum Route {
    Direct(HttpsConnector<HttpConnector>),
    Tunnel(HttpsConnector<Tunnel<HttpConnector>>),
}

/// A socket to Stripe and the permit it holds while it is open.
struct Held {
    io: Stream,
    _permit: OwnedSemaphorePermit,
}

impl Connection for Held {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
