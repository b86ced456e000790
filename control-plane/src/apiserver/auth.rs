//! Authentication: every request except the health endpoints must carry the admin bearer
//! token or a client certificate issued by the cluster CA. Authorization is all-or-nothing
//! for now; per-node restrictions arrive with multi-node clusters.

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
    let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?.trim();
    if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
        Some(User { name: "admin".into(), groups: vec!["system:masters".into(), "system:authenticated".into()] })
    } else {
        None
    }
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
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
