//! The OpenAPI 3.1 document of the HTTP API, served at `/api/v1/openapi.json`.

/// The document, as JSON text.
pub(crate) const DOCUMENT: &str = include_str!("../../assets/openapi.json");
