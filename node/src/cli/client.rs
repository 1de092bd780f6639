//! The CLI's HTTP client for the public API.

use anyhow::{anyhow, bail, Context};
use serde::{de::DeserializeOwned, Serialize};

/// Talks to one Keel API address.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `addr` (e.g. `http://127.0.0.1:7080`, or `https://…` with `ca`, the
    /// CA bundle that signed the API's certificate) sending `token` with every call.
    pub fn new(addr: &str, token: Option<&str>, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
            let mut value = value;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder().default_headers(headers);
        if let Some(path) = ca {
            let pem = std::fs::read(path).with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificates", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        } else if base.starts_with("https://") {
            bail!("{base} is HTTPS: say which CA signed its certificate with --ca-file or KEEL_CA_FILE (`keel dev --tls` writes it into the profile)");
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Self { base, http })
    }

    /// The API address this client calls.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send `req`; a non-2xx answer becomes an error carrying the problem's detail.
    async fn response(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach Keel at {}: {e}; is `keel dev` running, and is KEEL_ADDR (or --keel-addr, or the profile) right?",
                self.base
            )
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
            let detail = body.get("detail").and_then(|d| d.as_str()).unwrap_or("no detail given");
            let retry = if body.get("retryable").and_then(|r| r.as_bool()) == Some(true) {
                " (retryable)"
            } else {
                ""
            };
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                " (set KEEL_TOKEN, or --token; `keel dev` prints one and writes a profile)"
            } else {
                ""
            };
            bail!("{detail}{retry}{hint} [HTTP {}]", status.as_u16());
        }
        Ok(resp)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .response(req)
            .await?
            .json()
            .await
            .unwrap_or(serde_json::Value::Null))
    }

    /// GET `path` as text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.response(self.http.get(format!("{}{path}", self.base))).await?;
        resp.text()
            .await
            .map_err(|e| anyhow!("the answer from {} was cut short: {e}", self.base))
    }

    /// GET `path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// POST `body` to `path`.
    pub async fn post<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// PATCH `body` to `path`.
    pub async fn patch<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }
}

/// Decode an API answer into a typed value.
pub fn typed<T: DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(v).map_err(|e| anyhow!("unexpected answer from the server: {e}"))
}
