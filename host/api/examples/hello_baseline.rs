//! The baseline of `benches/api-load.sh`: a plain hyper 1 + tokio-rustls
//! server with nasvisor's TLS configuration (the same certificate kind and
//! cipher suites) and nothing else: no limits, no token, no router, no
//! core. It answers every request with the same bytes: `hello`, or the
//! content of the file given, so that the cost of carrying an answer of
//! that size over TLS and HTTP stands apart from the cost of making it.
//!
//! Usage: `hello_baseline ADDR DATA_DIR [BODY_FILE]` (the generated
//! certificate goes to `DATA_DIR/tls`). Prints `listening` once bound.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use std::convert::Infallible;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: hello_baseline ADDR DATA_DIR [BODY_FILE]")?;
    let data_dir = PathBuf::from(args.next().ok_or("DATA_DIR is missing")?);
    let body = match args.next() {
        Some(f) => Bytes::from(std::fs::read(f)?),
        None => Bytes::from_static(b"hello"),
    };
    let identity =
        nasvisor_api::tls::load_or_generate(&data_dir, &nasvisor_api::tls::TlsSettings::default())?;
    let acceptor = TlsAcceptor::from(identity.server_config.clone());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening");
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let mut r = Response::new(Full::new(body));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}
