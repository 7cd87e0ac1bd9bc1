//! The Prometheus endpoint: `GET /metrics` in the text exposition format, on the address of
//! `metrics.bind`, plain HTTP/1.1 (hyper), until shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::broker::Broker;

/// A scraper that sends no complete request within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait in the accept queue. A scrape is cheap, but nothing
/// outside the operator's scraper should be talking to this port.
const MAX_CONCURRENT: usize = 16;

/// Serves `GET /metrics` on `listener` until shutdown.
pub(crate) async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            res = listener.accept() => match res {
                Ok(accepted) => accepted,
                Err(e) => {
                    error!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let broker = broker.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(answer(&broker, &req)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        debug!(%peer, error = %e, "metrics endpoint: connection ended");
                    }
                }
                _ = stop.changed() => {}
            }
        });
    }
}

/// The answer to one request: the metrics for `GET /metrics`, 404 or 405 otherwise.
fn answer(broker: &Broker, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let status = if req.uri().path() != "/metrics" {
        StatusCode::NOT_FOUND
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        let body = broker.metrics.snapshot(broker).prometheus();
        return Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"GET /metrics\n")));
    *response.status_mut() = status;
    response
}
