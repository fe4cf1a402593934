//! A canned HTTP server for the client's tests: an axum router on
//! 127.0.0.1, port chosen by the kernel.
#![allow(dead_code)]

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;

/// Serves `router` in the background; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("canned server") });
    format!("http://{addr}")
}

/// A URL where nothing listens (a port the kernel just gave and took back).
pub async fn nothing_listening() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{addr}")
}

/// A response body the test writes chunk by chunk; dropping the sender
/// ends it.
pub fn streamed_body() -> (mpsc::UnboundedSender<&'static str>, Body) {
    let (tx, rx) = mpsc::unbounded_channel::<&'static str>();
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, Infallible>(Bytes::from_static(chunk.as_bytes())), rx))
    });
    (tx, Body::from_stream(chunks))
}
