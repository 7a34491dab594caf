//! The webhook channel: one JSON `POST` per finished delivery to a configured URL.
//!
//! The body ([`WebhookBody`]) names the notification, the delivery, the event type, the final
//! stage, the reason (or `null`), when it finished, the customer text and every notify-me
//! recipient. The `Idempotency-Key` header is the notification's id ([`idempotency_key`]), the
//! same on every retry and after a crash, so a receiver that remembers the keys it processed
//! drops a repeat.
//!
//! The answer decides: 2xx is sent; 408 and 429 (the receiver is busy) and everything else
//! (5xx, 3xx left over after redirects, no answer, a timeout) may pass later; any other 4xx is
//! the receiver refusing this request, which no retry changes.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::DeliveryStage;
use http::{HeaderValue, StatusCode};
use serde::Serialize;

use super::model::{Notification, Recipient};
use super::notifier::{Notifier, SendError};
use super::redact;

/// The header carrying [`Notification::id`].
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What the receiver gets.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody<'a> {
    pub notification_id: &'a str,
    pub delivery_id: &'a str,
    pub event_type: &'static str,
    pub stage: DeliveryStage,
    pub reason: Option<&'a str>,
    pub finished_at: DateTime<Utc>,
    pub text: &'a str,
    pub recipients: &'a [Recipient],
}

impl<'a> WebhookBody<'a> {
    pub fn of(notification: &'a Notification) -> Self {
        Self {
            notification_id: &notification.id,
            delivery_id: &notification.delivery_id,
            event_type: notification.event.event_type(),
            stage: notification.event.stage(),
            reason: notification.event.reason(),
            finished_at: notification.finished_at,
            text: &notification.text,
            recipients: &notification.recipients,
        }
    }
}

/// What an answer's status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Transient,
    Permanent,
}

/// 2xx sent; 4xx except 408 and 429 permanent; anything else transient.
pub fn classify(status: StatusCode) -> Verdict {
    if status.is_success() {
        Verdict::Sent
    } else if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
        Verdict::Permanent
    } else {
        Verdict::Transient
    }
}

/// The `Idempotency-Key` of a notification: its id, or, when the id has more than printable
/// ASCII (a delivery id is any string, and receivers read headers as ASCII), the id
/// percent-encoded, which is as stable.
pub fn idempotency_key(notification_id: &str) -> HeaderValue {
    let printable = notification_id.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    let key = if printable { notification_id.to_owned() } else { platform::client::encode_segment(notification_id) };
    HeaderValue::from_str(&key).expect("printable ASCII is a valid header value")
}

/// Checks a webhook URL (for the command line): absolute `http` or `https` with a host.
pub fn parse_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("use an http:// or https:// URL with a host".to_owned());
    }
    Ok(text.to_owned())
}

/// POSTs notifications to one URL.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL as records and logs show it.
    recipient: String,
}

impl WebhookNotifier {
    /// A notifier posting to `url` ([`parse_url`] rules), each call given up after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        parse_url(url)?;
        let url = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        let recipient = redact::url_for_display(url.as_str()).unwrap_or_else(|| url.origin().ascii_serialization());
        Ok(Self { client: platform::client::http_client(timeout), url, recipient })
    }

    /// The URL without credentials, query or fragment.
    pub fn recipient(&self) -> &str {
        &self.recipient
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn deliver(&self, notification: &Notification) -> Result<(), SendError> {
        let who = &self.recipient;
        let request = self
            .client
            .post(self.url.clone())
            .header(IDEMPOTENCY_KEY, idempotency_key(&notification.id))
            .json(&WebhookBody::of(notification));
        let sent = platform::client::send(request).await;
        let response = match sent {
            Ok(response) => response,
            // Without the URL: the configured one may carry a token in its query.
            Err(err) => {
                let reason = format!("webhook {who}: {}", err.without_url());
                return Err(SendError::Transient { reason, retry_after: None });
            }
        };
        let status = response.status();
        let verdict = classify(status);
        if verdict == Verdict::Sent {
            return Ok(());
        }
        let retry_after = platform::client::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let snippet: String = body.chars().take(200).collect();
        let reason = format!("webhook {who} answered {status}: {}", snippet.trim());
        Err(match verdict {
            Verdict::Permanent => SendError::Permanent { reason },
            _ => SendError::Transient { reason, retry_after },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifications::model::{Channel, Finish};

    #[test]
    fn answers_are_classified_by_status() {
        for sent in [200, 201, 202, 204] {
            assert_eq!(classify(StatusCode::from_u16(sent).unwrap()), Verdict::Sent, "{sent}");
        }
        for permanent in [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 425] {
            assert_eq!(classify(StatusCode::from_u16(permanent).unwrap()), Verdict::Permanent, "{permanent}");
        }
        for transient in [408, 429, 500, 501, 502, 503, 504, 300, 302, 304, 100] {
            assert_eq!(classify(StatusCode::from_u16(transient).unwrap()), Verdict::Transient, "{transient}");
        }
    }

    #[test]
    fn the_key_is_the_notification_id_as_far_as_a_header_allows() {
        assert_eq!(idempotency_key("d1:DeliveryCompleted:webhook:0"), "d1:DeliveryCompleted:webhook:0");
        assert_eq!(idempotency_key("d 1:DeliveryFailed:webhook:0"), "d 1:DeliveryFailed:webhook:0");
        assert_eq!(idempotency_key("dé:DeliveryFailed:webhook:0"), "d%C3%A9%3ADeliveryFailed%3Awebhook%3A0");
        assert_eq!(idempotency_key("d\n1:x"), "d%0A1%3Ax");
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        for good in ["http://127.0.0.1:9000/hook", "https://hooks.example/n?token=x"] {
            assert_eq!(parse_url(good).as_deref(), Ok(good));
        }
        for bad in ["hooks.example/n", "ftp://hooks.example/", "file:///tmp/x", "mailto:pat@contoso.com", ""] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let notifier = WebhookNotifier::new("https://u:p@hooks.example/n?token=x", Duration::from_secs(1)).unwrap();
        assert_eq!(notifier.recipient(), "https://hooks.example/n");
    }

    #[test]
    fn the_body_names_the_delivery_its_end_and_everyone() {
        let notification = Notification {
            id: "d1:DeliveryFailed:webhook:0".into(),
            delivery_id: "d1".into(),
            event: Finish::Failed { reason: Some("no drone".into()) },
            finished_at: "2026-03-15T12:00:00Z".parse().unwrap(),
            channel: Channel::Webhook,
            recipient: "https://hooks.example/n".into(),
            text: "t".into(),
            recipients: vec![Recipient { channel: Channel::Sms, address: "+14255550100".into() }],
        };
        let json = serde_json::to_value(WebhookBody::of(&notification)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "notificationId": "d1:DeliveryFailed:webhook:0",
                "deliveryId": "d1",
                "eventType": "DeliveryFailed",
                "stage": "Failed",
                "reason": "no drone",
                "finishedAt": "2026-03-15T12:00:00Z",
                "text": "t",
                "recipients": [{ "channel": "sms", "address": "+14255550100" }]
            })
        );
    }
}
