//! The HTTP scaffold every service is built on: health and metrics routes, request ids,
//! request spans, body limits, problem+json for errors, and graceful shutdown.

mod server;

pub use server::{HttpOptions, ReadinessProbe, ServiceRouter, probe, serve};
