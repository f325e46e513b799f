//! alb: an asynchronous HTTP load balancer (HTTP/1.1 and HTTP/2 on both hops, gRPC, WebSocket).
//!
//! # Layout, in the order a request travels
//! - [`config`]: the TOML file, parsed into raw structs, validated into a typed [`config::Config`]
//!   (TLS certificates loaded and checked with it).
//! - [`server`]: listeners (plain and TLS), client connections (HTTP/1.1, and HTTP/2 by ALPN or
//!   prior knowledge), graceful shutdown.
//! - [`proxy`]: one request: pick a backend, forward, stream back, header hygiene, error statuses.
//! - [`balance`]: the [`balance::Selector`] trait and one file per algorithm.
//! - [`upstream`]: backends, their live counters and health flag, pooled connections, the
//!   session of one request with one backend (HTTP/1.1, or a stream on an HTTP/2 connection).
//! - [`http1`], [`http2`]: the codecs; they import nothing above them.
//! - [`health`]: active health checks with rise/fall.
//! - [`admin`]: metrics, JSON API and live dashboard on their own listener.
//! - [`demo`]: the built-in demo backend.
//! - [`telemetry`]: log output set-up; [`runtime`]: the tokio runtime sized to the cores.

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
pub mod telemetry;
pub mod upstream;

pub use app::Server;
pub use config::Config;
