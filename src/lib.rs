//! alb: an asynchronous HTTP/1.1 load balancer.
//!
//! # Layout, in the order a request travels
//! - [`config`]: the TOML file, parsed into raw structs, validated into a typed [`config::Config`]
//!   (TLS certificates loaded and checked with it).
//! - [`server`]: listeners (plain and TLS), client connections, graceful shutdown.
//! - [`proxy`]: one request: pick a backend, forward, stream back, header hygiene, error statuses.
//! - [`balance`]: the [`balance::Selector`] trait and one file per algorithm.
//! - [`upstream`]: backends, their live counters and health flag, pooled connections.
//! - [`health`]: active health checks with rise/fall.
//! - [`admin`]: metrics, JSON API and live dashboard on their own listener.
//! - [`demo`]: the built-in demo backend.
//! - [`telemetry`]: log output set-up; [`runtime`]: the tokio runtime sized to the cores.

#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod control;
pub mod deadline;
pub mod demo;
pub mod health;
pub mod http1;
pub mod http2;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use server::Server;
