//! Messages on the bus.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::requests::{DeliveryRequest, RescheduleRequest};

/// The name of the queue ingestion fills and workflow drains.
pub const DELIVERY_REQUESTS_QUEUE: &str = "delivery-requests";

/// Every message on `delivery-requests`: the envelope fields plus a typed body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRequestEnvelope {
    /// De-duplication key.
    pub message_id: String,
    pub delivery_id: String,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the request that produced the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The account of the caller the gateway authenticated; absent when the ingestion service
    /// runs without an identity policy, and on messages queued before accounts existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(flatten)]
    pub command: DeliveryCommand,
}

/// What the request asks for: the reference's `operation` property, as `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "lowercase")]
pub enum DeliveryCommand {
    Delivery(DeliveryRequest),
    Reschedule(RescheduleRequest),
    Cancel(CancelRequest),
}

impl DeliveryCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Delivery(_) => "delivery",
            Self::Reschedule(_) => "reschedule",
            Self::Cancel(_) => "cancel",
        }
    }
}

/// A cancel carries nothing but the delivery id (in the envelope); the body says who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {}
