//! Addresses as logs may show them: enough to tell two apart or to spot a typo in a domain,
//! never the whole address (logs are kept longer and read by more people than the store).

use super::model::Channel;

/// `address` of `channel` with most of it hidden: `p***@contoso.com`, `***00`. Webhook
/// recipients are already URLs without credentials or query ([`url_for_display`]), so they are
/// shown as they are.
pub fn address(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Email => email(address),
        Channel::Sms => phone(address),
        Channel::Webhook | Channel::Log => address.to_owned(),
    }
}

/// The first character of the local part and the domain.
pub fn email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// The last two digits.
pub fn phone(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    format!("***{tail}")
}

/// A URL as logs and records may show it: scheme, host, port and path, without the user
/// information, query or fragment that may carry a secret token. `None` when it is no URL.
pub fn url_for_display(url: &str) -> Option<String> {
    let mut parsed = reqwest::Url::parse(url).ok()?;
    // These only fail on URLs that cannot have them (`mailto:`), which then have none to hide.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    Some(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_show_whole() {
        assert_eq!(address(Channel::Email, "pat.smith@contoso.com"), "p***@contoso.com");
        assert_eq!(address(Channel::Email, "p@contoso.com"), "p***@contoso.com");
        assert_eq!(address(Channel::Email, "not an address"), "***");
        assert_eq!(address(Channel::Sms, "+14255550100"), "***00");
        assert_eq!(address(Channel::Sms, "+1 425-555-0100"), "***00");
        assert_eq!(address(Channel::Sms, "7"), "***7");
        assert_eq!(address(Channel::Webhook, "https://h.example/n"), "https://h.example/n");
        for (channel, full) in [(Channel::Email, "pat.smith@contoso.com"), (Channel::Sms, "+14255550100")] {
            assert!(!address(channel, full).contains(full));
        }
    }

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(
            url_for_display("https://user:secret@hooks.example:8443/a/b?token=abc#frag").as_deref(),
            Some("https://hooks.example:8443/a/b")
        );
        assert_eq!(url_for_display("http://127.0.0.1:9/").as_deref(), Some("http://127.0.0.1:9/"));
        assert_eq!(url_for_display("not a url"), None);
    }
}
