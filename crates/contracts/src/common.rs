use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point: degrees and metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(default)]
    pub altitude: f64,
    pub latitude: f64,
    pub longitude: f64,
}

impl Location {
    pub fn new(latitude: f64, longitude: f64, altitude: f64) -> Self {
        Self { altitude, latitude, longitude }
    }
}

/// Who a delivery belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAccount {
    pub user_id: String,
    pub account_id: String,
}

/// A string that names none of an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant {
    pub value: String,
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown value {:?}, expected one of {}", self.value, self.expected.join(", "))
    }
}

impl std::error::Error for UnknownVariant {}

/// An enum written as a string, accepted in any letter case, written in its canonical case.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$variant_meta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s.eq_ignore_ascii_case($text) { return Ok(Self::$variant); })+
                Err(UnknownVariant { value: s.to_owned(), expected: Self::ALL })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum! {
    /// Package size on the public API (`Small`); the package service writes it lower case.
    ContainerSize { Small => "Small", Medium => "Medium", Large => "Large" }
}

impl ContainerSize {
    /// The package service's spelling.
    pub fn lower(&self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Medium => "medium",
            Self::Large => "large",
        }
    }
}

string_enum! {
    /// What proof the recipient gives at drop-off.
    ConfirmationType { FingerPrint => "FingerPrint", Picture => "Picture", Voice => "Voice", None => "None" }
}

string_enum! {
    /// Where a delivery is in its life.
    DeliveryStage {
        Created => "Created",
        Rescheduled => "Rescheduled",
        HeadedToPickup => "HeadedToPickup",
        HeadedToDropoff => "HeadedToDropoff",
        Completed => "Completed",
        Cancelled => "Cancelled",
        /// The delivery will never fly: the workflow gave up on it (see its status's reason).
        Failed => "Failed",
    }
}

impl DeliveryStage {
    /// No change can follow.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_accept_any_case_and_write_canonical_case() {
        let size: ContainerSize = serde_json::from_str("\"sMaLL\"").unwrap();
        assert_eq!(size, ContainerSize::Small);
        assert_eq!(serde_json::to_string(&size).unwrap(), "\"Small\"");
        let err = serde_json::from_str::<ContainerSize>("\"Huge\"").unwrap_err().to_string();
        assert!(err.contains("expected one of Small, Medium, Large"), "{err}");
        assert_eq!("fingerprint".parse::<ConfirmationType>().unwrap(), ConfirmationType::FingerPrint);
    }

    #[test]
    fn delivery_stages_and_which_are_final() {
        assert_eq!(serde_json::from_str::<DeliveryStage>("\"failed\"").unwrap(), DeliveryStage::Failed);
        assert_eq!(serde_json::to_string(&DeliveryStage::Failed).unwrap(), "\"Failed\"");
        let finals: Vec<_> =
            DeliveryStage::ALL.iter().filter(|s| s.parse::<DeliveryStage>().unwrap().is_final()).collect();
        assert_eq!(finals, [&"Completed", &"Cancelled", &"Failed"]);
    }
}
