//! What can go wrong talking to the Neutron and identity APIs, with the
//! server's own error body decoded.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// No answer: connection refused, timeout, a broken body.
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered a status the caller did not accept. The body is
    /// boxed to keep every `Result` of this crate small.
    #[error("{method} {path} answered {status}: {body}")]
    Status { method: Method, path: String, status: StatusCode, body: Box<ErrorBody> },
    /// A successful answer without something it must carry (a token header,
    /// an id).
    #[error("{what}: {detail}")]
    Unexpected { what: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The decoded `NeutronError`, when the server sent one.
    pub fn neutron(&self) -> Option<&NeutronError> {
        match self {
            Error::Status { body, .. } => match &**body {
                ErrorBody::Neutron(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// The decoded Keystone error, when the server sent one.
    pub fn keystone(&self) -> Option<&KeystoneError> {
        match self {
            Error::Status { body, .. } => match &**body {
                ErrorBody::Keystone(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The body of an error answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorBody {
    /// `{"NeutronError": {...}}` (or `NotImplementedError`, same shape).
    Neutron(NeutronError),
    /// Keystone's `{"error": {...}}`, also what Neutron sends on a 401.
    Keystone(KeystoneError),
    /// Anything else, as JSON (`Null` when empty or not JSON).
    Other(Value),
}

/// Neutron's error: `{"type": ..., "message": ..., "detail": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NeutronError {
    /// The Neutron exception name (`PortNotFound`, `IpAddressAlreadyAllocated`).
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub detail: String,
}

/// Keystone's error: `{"code": ..., "title": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeystoneError {
    pub code: u16,
    pub title: String,
    pub message: String,
}

impl ErrorBody {
    pub fn decode(body: &Value) -> ErrorBody {
        for key in ["NeutronError", "NotImplementedError"] {
            if let Some(inner) = body.get(key)
                && let Ok(e) = NeutronError::deserialize(inner)
            {
                return ErrorBody::Neutron(e);
            }
        }
        if let Some(inner) = body.get("error")
            && let Ok(e) = KeystoneError::deserialize(inner)
        {
            return ErrorBody::Keystone(e);
        }
        ErrorBody::Other(body.clone())
    }
}

/// Bodies of unknown shape are cut here in messages: a misrouted request
/// can answer a whole HTML page.
const SHOWN_BODY_CHARS: usize = 500;

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorBody::Neutron(e) if e.detail.is_empty() => write!(f, "{}: {}", e.kind, e.message),
            ErrorBody::Neutron(e) => write!(f, "{}: {} ({})", e.kind, e.message, e.detail),
            ErrorBody::Keystone(e) => write!(f, "{}: {}", e.title, e.message),
            ErrorBody::Other(Value::Null) => f.write_str("(no JSON body)"),
            ErrorBody::Other(v) => {
                let text = v.to_string();
                match text.char_indices().nth(SHOWN_BODY_CHARS) {
                    Some((cut, _)) => write!(f, "{}...", &text[..cut]),
                    None => f.write_str(&text),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn error_bodies_are_told_apart() {
        let neutron =
            json!({"NeutronError": {"type": "PortNotFound", "message": "Port x could not be found.", "detail": ""}});
        let ErrorBody::Neutron(e) = ErrorBody::decode(&neutron) else { panic!("not Neutron") };
        assert_eq!((e.kind.as_str(), e.detail.as_str()), ("PortNotFound", ""));

        let unimplemented = json!({"NotImplementedError": {"type": "NotImplemented", "message": "no"}});
        assert!(matches!(ErrorBody::decode(&unimplemented), ErrorBody::Neutron(e) if e.kind == "NotImplemented"));

        let keystone = json!({"error": {"code": 401, "title": "Unauthorized", "message": "bad token"}});
        assert!(matches!(ErrorBody::decode(&keystone), ErrorBody::Keystone(e) if e.code == 401));

        // Half a Neutron error is not one.
        let partial = json!({"NeutronError": {"message": "no type"}});
        assert_eq!(ErrorBody::decode(&partial), ErrorBody::Other(partial.clone()));
    }

    #[test]
    fn long_bodies_are_cut_in_messages() {
        let body = ErrorBody::Other(Value::String("x".repeat(2000)));
        let shown = body.to_string();
        assert!(shown.ends_with("...") && shown.len() < 600, "{}", shown.len());
    }
}
