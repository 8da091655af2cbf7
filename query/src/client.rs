//! The HTTP client the CLI uses to talk to a collector's read API.

use std::time::Duration;

use serde_json::Value;

/// Failures talking to the collector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error(
        "cannot reach the collector at {url}: {source} (is `spoor collector` or `spoor up` running? set --collector or SPOOR_COLLECTOR)"
    )]
    Unreachable {
        /// The collector's base URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The collector answered with an error.
    #[error("the collector answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` text.
        message: String,
        /// The whole JSON body.
        body: Value,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the collector: {0}")]
    Protocol(String),
}

/// A collector's read API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (for example `http://127.0.0.1:8740`), with an optional bearer
    /// token.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn get(&self, path: &str, params: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut url = format!("{}{path}", self.base);
        let mut sep = '?';
        for (k, v) in params {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_component(v));
            sep = '&';
        }
        let mut req = self.http.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: Value = resp
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let message = body["error"]
            .as_str()
            .unwrap_or("no error message")
            .to_string();
        Err(ClientError::Api {
            status,
            message,
            body,
        })
    }

    /// `GET path` with query parameters, returning the JSON body.
    pub async fn get_json(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let resp = self.send(self.get(path, params)).await?;
        json_body(resp).await
    }

    /// `POST path` with a JSON body, returning the JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = self.send(req).await?;
        json_body(resp).await
    }

    /// `DELETE` on an API path; the JSON answer.
    pub async fn delete_json(&self, path: &str) -> Result<Value, ClientError> {
        let mut req = self.http.delete(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = self.send(req).await?;
        json_body(resp).await
    }

    /// Follows `GET /api/v1/tail`, calling `on_hit` with each new hit until the stream ends
    /// or `on_hit` returns false.
    pub async fn tail(
        &self,
        q: &str,
        mut on_hit: impl FnMut(Value) -> bool,
    ) -> Result<(), ClientError> {
        let mut resp = self
            .send(self.get("/api/v1/tail", &[("q", q.to_string())]))
            .await?;
        let mut pending = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Some(data) = line.strip_prefix(b"data:") {
                    let hit: Value = serde_json::from_slice(data.trim_ascii())
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    if !on_hit(hit) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// An answer's body as JSON.
async fn json_body(resp: reqwest::Response) -> Result<Value, ClientError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Percent-encodes a query-string component (RFC 3986 unreserved characters stay).
/// Written here because it is six lines and the `url` crate would be a large dependency
/// for it.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_query_text() {
        assert_eq!(
            super::encode_component("level:error a b&c=d/é"),
            "level%3Aerror%20a%20b%26c%3Dd%2F%C3%A9"
        );
    }
}
