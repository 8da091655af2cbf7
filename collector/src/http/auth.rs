//! Bearer tokens with scopes, checked in constant time.
//!
//! With no tokens configured the collector runs open (only allowed on loopback, see
//! `CollectorConfig::validate`), and every caller has every scope.

use axum::http::{HeaderMap, StatusCode, header};
use ring::digest;

use super::error::ApiError;
use crate::config::{CollectorConfig, Scope};
use crate::error::ConfigError;

/// The configured tokens, kept as SHA-256 digests.
#[derive(Clone)]
pub struct Auth {
    tokens: Vec<(String, Vec<Scope>, digest::Digest)>,
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name, or `anonymous` when running open.
    pub name: String,
}

impl Auth {
    /// Resolves the configured token secrets.
    pub fn from_config(config: &CollectorConfig) -> Result<Self, ConfigError> {
        let mut tokens = Vec::new();
        for t in &config.tokens {
            let value = t.secret()?.resolve()?;
            tokens.push((
                t.name.clone(),
                t.scopes.clone(),
                digest::digest(&digest::SHA256, value.as_bytes()),
            ));
        }
        Ok(Self { tokens })
    }

    /// Whether the collector runs without tokens.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks the `Authorization: Bearer` header for `scope`.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller {
                name: "anonymous".into(),
            });
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing `Authorization: Bearer <token>`",
                )
            })?;
        let presented = digest::digest(&digest::SHA256, presented.trim().as_bytes());
        // Compare every configured digest, whatever matched, so timing says nothing.
        let mut found: Option<&(String, Vec<Scope>, digest::Digest)> = None;
        for entry in &self.tokens {
            if constant_time_eq(entry.2.as_ref(), presented.as_ref()) {
                found = Some(entry);
            }
        }
        let (name, scopes, _) =
            found.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"))?;
        if scopes.contains(&scope) || scopes.contains(&Scope::Admin) {
            Ok(Caller { name: name.clone() })
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("token `{name}` lacks the `{}` scope", scope_name(scope)),
            ))
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Ingest => "ingest",
        Scope::Read => "read",
        Scope::Admin => "admin",
    }
}

/// Equal-length byte comparison whose time does not depend on where they differ.
/// (ring deprecated its own `verify_slices_are_equal`; this is the usual fold.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
