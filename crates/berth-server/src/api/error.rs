//! JSON errors: `{"code": ..., "message": ..., "field": ..., "errors": [...]}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::{FieldError, SpecErrors};
use berth_store::StoreError;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem, for spec validation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The deployment a `deployment_running` conflict is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            errors: Vec::new(),
            deployment: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<SpecErrors> for ApiError {
    fn from(e: SpecErrors) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_spec",
            message: e.to_string(),
            field: e.0.first().map(|f| f.field.clone()),
            errors: e.0,
            deployment: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code, field) = match &e {
            StoreError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists", Some("id")),
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict", None),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None),
        };
        let mut err = ApiError::new(status, code, e.to_string());
        err.field = field.map(str::to_string);
        err
    }
}

impl From<crate::deploy::ChangeError> for ApiError {
    fn from(e: crate::deploy::ChangeError) -> Self {
        use crate::deploy::ChangeError as C;
        match e {
            C::Store(e) => e.into(),
            C::Busy { ref id, .. } => {
                let mut err =
                    ApiError::new(StatusCode::CONFLICT, "deployment_running", e.to_string());
                err.deployment = Some(id.to_string());
                err
            }
            C::NotFound(_) => ApiError::not_found(e.to_string()),
            C::Refused(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}
