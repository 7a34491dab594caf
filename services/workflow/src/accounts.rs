//! The account check before a delivery is scheduled: the account service says whether the
//! account the gateway authenticated is active. A suspended or unknown account gives the
//! request up with that reason (the guide's "expected error"); an account service that does not
//! answer is a downstream like any other, retried until the request's deadline.

use serde::Deserialize;

/// `GET /internal/accounts/{id}` as far as the workflow reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: String,
    pub status: String,
}

/// What the account service said about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountStanding {
    Active,
    /// Any other status (today: `suspended`).
    Inactive(String),
    Unknown,
}

impl AccountStanding {
    pub fn of(view: &AccountView) -> Self {
        if view.status == "active" { Self::Active } else { Self::Inactive(view.status.clone()) }
    }

    /// Why a request of `account_id` cannot be scheduled; `None` when it can.
    pub fn refusal(&self, account_id: &str) -> Option<String> {
        match self {
            Self::Active => None,
            Self::Inactive(status) => Some(format!("account {account_id} is {status}")),
            Self::Unknown => Some(format!("account {account_id} does not exist")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_active_account_may_schedule() {
        let view = |status: &str| AccountView { id: "acc-1".into(), status: status.into() };
        assert_eq!(AccountStanding::of(&view("active")).refusal("acc-1"), None);
        assert_eq!(
            AccountStanding::of(&view("suspended")).refusal("acc-1").as_deref(),
            Some("account acc-1 is suspended")
        );
        assert_eq!(AccountStanding::Unknown.refusal("acc-9").as_deref(), Some("account acc-9 does not exist"));
    }
}
