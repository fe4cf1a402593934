//! Typed identifiers. A `PortId` can never be passed where a `NetworkId` is
//! wanted; all of them are UUIDs printed in the usual hyphenated form.

use std::fmt;
use std::str::FromStr;

/// Declares a UUID newtype with parsing, display and serde support.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new() -> Self {
                Self(uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(
    /// Identifies a network.
    NetworkId
);
uuid_id!(
    /// Identifies a subnet.
    SubnetId
);
uuid_id!(
    /// Identifies a port.
    PortId
);
uuid_id!(
    /// Identifies a network segment.
    SegmentId
);
uuid_id!(
    /// Identifies a subnet pool.
    SubnetPoolId
);
uuid_id!(
    /// Identifies a security group.
    SecurityGroupId
);
uuid_id!(
    /// Identifies a security group rule.
    SecurityGroupRuleId
);
uuid_id!(
    /// Identifies a router.
    RouterId
);
uuid_id!(
    /// Identifies a floating IP.
    FloatingIpId
);
uuid_id!(
    /// Identifies a port forwarding of a floating IP.
    PortForwardingId
);
uuid_id!(
    /// Identifies an agent (one per host and agent type).
    AgentId
);
uuid_id!(
    /// Identifies an RBAC policy.
    RbacPolicyId
);

/// A Keystone project id. Keystone ids are opaque strings (32 hex digits
/// for ids Keystone generates); Neutron stores them verbatim.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ProjectId(pub String);

impl ProjectId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// A new Keystone-style id: 32 lower-case hex digits.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProjectId({})", self.0)
    }
}

/// A Keystone user id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct UserId(pub String);

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_json() {
        let id = NetworkId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<NetworkId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<NetworkId>(&json).unwrap(), id);
        assert!("not-a-uuid".parse::<PortId>().is_err());
    }

    #[test]
    fn keystone_ids_are_32_hex_digits() {
        let p = ProjectId::generate();
        assert_eq!(p.as_str().len(), 32);
        assert!(p.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    }
}
