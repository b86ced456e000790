//! Authentication: every request except the health endpoints must carry the admin bearer
//! token or a client certificate issued by the cluster CA. Authorization is all-or-nothing
//! for now; per-node restrictions arrive with multi-node clusters.
//!
//! HTTP Basic is accepted too when its password is a valid bearer token (the user name is
//! ignored): docker, oras and other registry clients send credentials that way. A `401` on the
//! registry's `/v2/` paths is written in the OCI error format with a `WWW-Authenticate: Basic`
//! challenge, so those clients know to retry with credentials.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::SharedState;
use super::error::ApiError;
use super::serve::PeerInfo;

/// Who made the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// Rejects unauthenticated requests with a `401` Status; records the [`User`] otherwise.
pub async fn authenticate(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    match identify(&state, &req) {
        Some(user) => {
            tracing::trace!(user = %user.name, "authenticated");
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        None if req.uri().path() == "/v2" || req.uri().path().starts_with("/v2/") => {
            crate::artifacts::error::RegistryError::Unauthorized.into_response()
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

fn identify(state: &SharedState, req: &Request) -> Option<User> {
    if let Some(peer) = req.extensions().get::<PeerInfo>()
        && let Some(cn) = &peer.client_cert_cn
    {
        return Some(User { name: cn.clone(), groups: peer.client_cert_orgs.clone() });
    }
    let header = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = match header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")) {
        Some(token) => token.trim().to_string(),
        None => basic_password(header)?,
    };
    if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
        Some(User { name: "admin".into(), groups: vec!["system:masters".into(), "system:authenticated".into()] })
    } else {
        None
    }
}

/// The password of an `Authorization: Basic base64(user:password)` header.
fn basic_password(header: &str) -> Option<String> {
    use base64::Engine;
    let encoded = header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic "))?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// Compares without an early exit, so response timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{basic_password, constant_time_eq};
    use base64::Engine;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn basic_credentials() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("skiff:tok:en");
        assert_eq!(basic_password(&format!("Basic {encoded}")).as_deref(), Some("tok:en"));
        assert_eq!(basic_password("Basic !!!"), None);
        assert_eq!(basic_password("Digest x"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("justuser");
        assert_eq!(basic_password(&format!("Basic {no_colon}")), None);
    }
}
