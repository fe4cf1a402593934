//! Small constructors of the `nftables` crate's JSON expressions, shared by
//! the router NAT and the firewall drivers.

use std::borrow::Cow;

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField};

/// A string (an interface name, a set name, a textual value).
pub(crate) fn s(text: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(text.into()))
}

/// `meta KEY`.
pub(crate) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// `PROTOCOL FIELD` (`ip saddr`, `tcp dport`, ...).
pub(crate) fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}
