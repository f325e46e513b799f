//! alb: an asynchronous HTTP load balancer (HTTP/1.1 and HTTP/2 on both hops, gRPC, WebSocket).
//!
//! # Layout, in the order a request travels
//! - [`config`]: the TOML file, parsed into raw structs, validated into a typed [`config::Config`]
//!   (TLS certificates loaded and checked with it; a pool's backends read in one place).
//! - [`downstream`]: the client side. The [`downstream::Acceptor`] owns the listeners (plain and
//!   TLS) and the connection cap; each connection goes through the detector (PROXY protocol
//!   header, h2c preface; ALPN over TLS) to the room of its protocol, HTTP/1.1 or HTTP/2, which
//!   turns wire into requests for the proxy and its replies back into wire; graceful shutdown.
//! - [`proxy`]: one request: route, rate limit, the header policy, the protocol-neutral
//!   [`upstream::Outbound`] built once, pick and retry, the [`proxy::Reply`] (and
//!   [`proxy::Reply::local`] for every answer alb makes itself), the body settled once.
//! - [`balance`]: the [`balance::Selector`] trait and one file per algorithm.
//! - [`upstream`]: backends, their live counters and health flag, pooled connections, the
//!   session of one request with one backend ([`upstream::exchange`]: HTTP/1.1, or a stream on
//!   an HTTP/2 connection) and how far a failed one got.
//! - [`health`]: active health checks with rise/fall, passive ejection.
//! - [`control`]: the control plane ([`control::ControlPlane`]): reloads, runtime backend
//!   changes, health checks started and stopped, DNS discovery; it swaps the snapshot requests
//!   run on.
//! - [`admin`]: metrics, JSON API and live dashboard on their own listener.
//! - [`app`]: the composition root: [`app::Server`] binds the listeners, builds the proxy and
//!   its control plane, serves and drains; binary upgrade and the listeners' handover.
//! - [`http1`], [`http2`]: the codecs, for both hops; they import nothing above them.
//! - [`demo`]: the built-in demo backend and its fault knobs.
//! - [`deadline`]: a timeout cheap to move later, one timer per connection.
//! - [`trace`]: W3C trace context passed to backends, spans exported over OTLP.
//! - [`shared_state`]: the Redis replicas share route rate limits through (`[shared_state]`).
//! - [`runtime`]: the tokio runtime sized to the cores; [`telemetry`]: log output and the
//!   access log's writer thread.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod control;
pub mod deadline;
pub mod demo;
pub mod downstream;
pub mod health;
pub mod http1;
pub mod http2;
pub mod proxy;
pub mod runtime;
pub mod shared_state;
pub mod telemetry;
pub mod trace;
pub mod upstream;

pub use app::Server;
pub use config::Config;
