//! strata-fn: a function platform on the Strata library. Every event runs in
//! a fresh container created in-process from the function's read-only rootfs;
//! a warm pool of created-but-not-started containers makes the start the only
//! cost on the request path; invocations are limited, timed out, metered and
//! recorded; idle functions scale to zero.

pub mod auth;
pub mod cluster;
pub mod error;
pub mod function;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod pool;
pub mod runner;
pub mod server;
pub mod store;
pub mod tls;
pub mod vm;
pub mod zygote;

pub use error::{Error, Result};
