//! The one place where errors become HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use neutrino_model::{Error, ErrorClass};
use serde_json::json;

/// An error on its way to the client. Neutron errors get the
/// `{"NeutronError": {...}}` body; authentication failures get Keystone's
/// `{"error": {...}}` body and a `WWW-Authenticate` header.
#[derive(Debug)]
pub enum ApiError {
    Neutron(Error),
    Unauthorized {
        message: String,
        keystone_uri: String,
    },
    /// Keystone-shaped errors of the identity API.
    Identity {
        status: u16,
        title: &'static str,
        message: String,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Neutron(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn identity(status: u16, message: impl Into<String>) -> Self {
        let title = match status {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            409 => "Conflict",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        ApiError::Identity { status, title, message: message.into() }
    }
}

/// The HTTP status of each class of error, as Neutron answers them.
pub fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorClass::Forbidden => StatusCode::FORBIDDEN,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorClass::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Neutron(e) => {
                let status = status_of(e.class());
                if let Error::Internal(detail) = &e {
                    tracing::error!(%detail, "internal error");
                }
                let top = if matches!(e, Error::NotImplemented(_)) { "NotImplementedError" } else { "NeutronError" };
                let body = json!({ top: {"type": e.type_name(), "message": e.to_string(), "detail": ""} });
                (status, axum::Json(body)).into_response()
            }
            ApiError::Unauthorized { message, keystone_uri } => {
                let body = json!({"error": {"code": 401, "title": "Unauthorized", "message": message}});
                let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("Keystone uri=\"{keystone_uri}\"")) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                resp
            }
            ApiError::Identity { status, title, message } => {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = json!({"error": {"code": status, "title": title, "message": message}});
                (code, axum::Json(body)).into_response()
            }
        }
    }
}
