//! The node protocol's client: a [`Coordinator`] reached over HTTP, what
//! `tessera node` runs its node against (the server side is
//! `server::nodes`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tessera_framework::digest::{Digest, HashingWriter};
use tessera_framework::protocol::{
    Assignment, AttemptKey, AttemptReport, CommitReply, Coordinator, Heartbeat, HeartbeatReply,
    NodeError, NodeRegistration, Registered, StartTaskReport, UploadSource, Uploaded,
};

use crate::client::{ClientError, segment};
use crate::server::{ErrorBody, LeaseRequest, NODE_KEY_HEADER, NODE_SCHEME};

/// How long a call may take beyond the time it asks the service to wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The service as a remote node sees it.
pub struct NodeClient {
    base: String,
    http: reqwest::Client,
    authorization: String,
    /// The key of each id the node registered under.
    keys: Mutex<HashMap<String, String>>,
}

impl NodeClient {
    /// A client of the service at `url` for a node of pool `pool`, joining
    /// with the pool's join `token`.
    pub fn new(url: &str, pool: &str, token: &str) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            base,
            http,
            authorization: format!("{NODE_SCHEME} {pool}:{token}"),
            keys: Mutex::new(HashMap::new()),
        })
    }

    fn request(&self, method: Method, path: &str, node: Option<&str>) -> RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        if let Some(node) = node {
            let key = self
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(node)
                .cloned()
                .unwrap_or_default();
            request = request.header(NODE_KEY_HEADER, key);
        }
        request
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, NodeError> {
        let response = request.send().await.map_err(transport)?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(refusal(response).await)
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, NodeError> {
        self.send(request).await?.json().await.map_err(transport)
    }
}

/// A transport failure: the service may be back later.
fn transport(e: reqwest::Error) -> NodeError {
    NodeError::Unavailable(format!("{e}"))
}

/// The typed error of a refused request.
async fn refusal(response: reqwest::Response) -> NodeError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.code, body.message),
        Err(_) => (
            String::new(),
            format!(
                "the service answered {status}: {}",
                text.chars().take(500).collect::<String>()
            ),
        ),
    };
    match code.as_str() {
        "node_unknown" => NodeError::UnknownNode(message),
        "pool_gone" => NodeError::PoolGone(message),
        "token_refused" | "unauthorized" => NodeError::TokenRefused(message),
        _ if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            NodeError::Unavailable(message)
        }
        _ => NodeError::Refused(message),
    }
}

impl Coordinator for NodeClient {
    async fn register(&self, node: NodeRegistration) -> Result<Registered, NodeError> {
        let registered: Registered = self
            .json(
                self.request(Method::POST, "/v1/nodes", None)
                    .timeout(CALL_TIMEOUT)
                    .json(&node),
            )
            .await?;
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registered.node_id.clone(), registered.node_key.clone());
        Ok(registered)
    }

    async fn heartbeat(
        &self,
        heartbeat: Heartbeat,
        wait: Duration,
    ) -> Result<HeartbeatReply, NodeError> {
        let path = format!(
            "/v1/nodes/{}/heartbeat?wait_ms={}",
            segment(&heartbeat.node_id),
            wait.as_millis()
        );
        let request = self
            .request(Method::POST, &path, Some(&heartbeat.node_id))
            .timeout(wait + CALL_TIMEOUT)
            .json(&heartbeat);
        self.json(request).await
    }

    async fn lease(
        &self,
        node_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Assignment>, NodeError> {
        let path = format!("/v1/nodes/{}/lease", segment(node_id));
        let request = self
            .request(Method::POST, &path, Some(node_id))
            .timeout(wait + CALL_TIMEOUT)
            .json(&LeaseRequest {
                max,
                wait_ms: wait.as_millis() as u64,
            });
        self.json(request).await
    }

    async fn commit(
        &self,
        node_id: &str,
        reports: &[AttemptReport],
    ) -> Result<CommitReply, NodeError> {
        let path = format!("/v1/nodes/{}/commit", segment(node_id));
        let request = self
            .request(Method::POST, &path, Some(node_id))
            .timeout(CALL_TIMEOUT)
            .json(reports);
        self.json(request).await
    }

    async fn start_task_finished(
        &self,
        node_id: &str,
        report: &StartTaskReport,
    ) -> Result<(), NodeError> {
        let path = format!("/v1/nodes/{}/start-task", segment(node_id));
        let request = self
            .request(Method::POST, &path, Some(node_id))
            .timeout(CALL_TIMEOUT)
            .json(report);
        self.send(request).await?;
        Ok(())
    }

    async fn deregister(&self, node_id: &str) -> Result<(), NodeError> {
        let path = format!("/v1/nodes/{}", segment(node_id));
        let request = self
            .request(Method::DELETE, &path, Some(node_id))
            .timeout(CALL_TIMEOUT);
        self.send(request).await?;
        Ok(())
    }

    async fn fetch_file(
        &self,
        node_id: &str,
        digest: &Digest,
        dest: &Path,
    ) -> Result<(), NodeError> {
        let path = format!("/v1/nodes/{}/files/{digest}", segment(node_id));
        let response = self
            .send(self.request(Method::GET, &path, Some(node_id)))
            .await?;
        let local =
            |e: std::io::Error| NodeError::Unavailable(format!("writing {}: {e}", dest.display()));
        let dir = dest
            .parent()
            .ok_or_else(|| NodeError::Unavailable(format!("{} has no parent", dest.display())))?;
        tokio::fs::create_dir_all(dir).await.map_err(local)?;
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(local)?;
        let mut out = std::io::BufWriter::new(HashingWriter::new(tmp.reopen().map_err(local)?));
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk.map_err(transport)?).map_err(local)?;
        }
        let (got, _) = out
            .into_inner()
            .map_err(|e| local(e.into_error()))?
            .finish();
        if got != *digest {
            return Err(NodeError::Unavailable(format!(
                "the file {digest} arrived with digest {got}; it will be fetched again"
            )));
        }
        tmp.persist(dest).map_err(|e| local(e.error))?;
        Ok(())
    }

    async fn upload(
        &self,
        node_id: &str,
        key: &AttemptKey,
        source: UploadSource<'_>,
    ) -> Result<Uploaded, NodeError> {
        let path = format!(
            "/v1/nodes/{}/uploads/{}/{}/{}",
            segment(node_id),
            segment(&key.job_id),
            key.seq,
            key.attempt
        );
        let body = match source {
            UploadSource::Bytes(bytes) => reqwest::Body::from(bytes.clone()),
            UploadSource::File(file) => {
                let file = tokio::fs::File::open(file).await.map_err(|e| {
                    NodeError::Unavailable(format!("reading {}: {e}", file.display()))
                })?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
            }
        };
        self.json(self.request(Method::PUT, &path, Some(node_id)).body(body))
            .await
    }

    async fn fetch_artifact(&self, node_id: &str, key: &str) -> Result<Option<Bytes>, NodeError> {
        let path = format!("/v1/nodes/{}/artifacts/{key}", segment(node_id));
        let response = self
            .request(Method::GET, &path, Some(node_id))
            .timeout(CALL_TIMEOUT * 5)
            .send()
            .await
            .map_err(transport)?;
        match response.status() {
            status if status.is_success() => Ok(Some(response.bytes().await.map_err(transport)?)),
            StatusCode::NOT_FOUND => {
                let error = refusal(response).await;
                match error {
                    NodeError::UnknownNode(_) => Err(error),
                    _ => Ok(None),
                }
            }
            _ => Err(refusal(response).await),
        }
    }
}
