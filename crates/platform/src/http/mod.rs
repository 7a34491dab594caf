//! The HTTP scaffold every service is built on: health and metrics routes, request ids,
//! request spans, body limits, problem+json for errors, and graceful shutdown.

mod request_metrics;
mod server;
mod startup;

pub use request_metrics::RequestMetricsLayer;

pub use server::{HttpOptions, ReadinessProbe, ServiceRouter, probe, serve};
pub use startup::Starting;
