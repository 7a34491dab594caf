//! The `after` cursor of a history page: the position (finish time, delivery id) of the last
//! item a page returned. Clients see it as an opaque token: the hex of
//! `{finishedAtMillis}:{deliveryId}`, which keeps it URL-safe without escaping and leaves its
//! layout ours to change.

/// Where a page stopped, in the history's order (finish time, then delivery id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Unix milliseconds, as stored.
    pub finished_at: i64,
    pub delivery_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let plain = format!("{}:{}", self.finished_at, self.delivery_id);
        plain.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// `None` for anything [`Cursor::encode`] did not produce.
    pub fn decode(token: &str) -> Option<Self> {
        if token.is_empty() || !token.len().is_multiple_of(2) {
            return None;
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| token.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
            .collect::<Option<Vec<u8>>>()?;
        let plain = String::from_utf8(bytes).ok()?;
        let (millis, delivery_id) = plain.split_once(':')?;
        // `i64::from_str` takes a leading `+`; encode never writes one.
        if millis.starts_with('+') || delivery_id.is_empty() {
            return None;
        }
        Some(Self { finished_at: millis.parse().ok()?, delivery_id: delivery_id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_position() {
        for (finished_at, delivery_id) in [(0, "d1"), (1_767_225_600_123, "a:b/c d"), (-5, "é✓"), (i64::MAX, "x")] {
            let cursor = Cursor { finished_at, delivery_id: delivery_id.to_owned() };
            let token = cursor.encode();
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
            assert_eq!(Cursor::decode(&token), Some(cursor));
        }
    }

    #[test]
    fn refuses_what_it_did_not_make() {
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        for token in [
            String::new(),
            "abc".to_owned(),
            "zz".to_owned(),
            "é1".to_owned(),
            hex("no-colon"),
            hex("12:"),
            hex("x:d1"),
            hex("+12:d1"),
            hex("99999999999999999999:d1"),
            "ff3a6431".to_owned(),
        ] {
            assert_eq!(Cursor::decode(&token), None, "{token:?}");
        }
    }
}
