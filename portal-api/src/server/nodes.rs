//! The node protocol over HTTP: what `tessera node` agents call, under
//! `/v1/nodes`. Each handler is [`Coordinator`]'s method of the same name,
//! called on the service's scheduler.
//!
//! Every request carries the pool's join token, `Authorization:
//! TesseraNode <pool id>:<token>`; a node's own requests also carry the key
//! it got when it registered (`x-tessera-node-key`), so that no other node
//! of the pool can act for it, and a node is only ever known within its own
//! pool.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tessera_framework::digest::Digest;
use tessera_framework::pools::NodePool;
use tessera_framework::protocol::{
    Assignment, AttemptKey, AttemptReport, CommitReply, Coordinator, Heartbeat, HeartbeatReply,
    NodeError, NodeRegistration, Registered, StartTaskReport, Uploaded,
};
use tessera_framework::service::Service;

use super::{ApiError, ApiResult, ErrorBody, JsonBody, PathParams, QueryParams};

/// The scheme of a node agent's `Authorization` header.
pub const NODE_SCHEME: &str = "TesseraNode";

/// The header carrying a node's own key.
pub const NODE_KEY_HEADER: &str = "x-tessera-node-key";

/// Longest a heartbeat or lease request may wait for something to happen.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Largest commit body: a batch of reports (the node splits batches the
/// service refuses as too large).
const MAX_COMMIT_BODY: usize = 64 << 20;

/// A lease request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Most tasks wanted.
    pub max: usize,
    /// How long to wait for work, in milliseconds.
    pub wait_ms: u64,
}

/// How long a heartbeat waits for news, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// Milliseconds.
    pub wait_ms: Option<u64>,
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let status = match &e {
            NodeError::UnknownNode(_) => StatusCode::NOT_FOUND,
            NodeError::PoolGone(_) => StatusCode::GONE,
            NodeError::TokenRefused(_) => StatusCode::UNAUTHORIZED,
            NodeError::Refused(_) => StatusCode::BAD_REQUEST,
            NodeError::Unavailable(message) => {
                tracing::error!(%message, "a node request failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        Self {
            status,
            body: ErrorBody {
                code: e.code().into(),
                message: e.to_string(),
            },
        }
    }
}

/// The routes of the node protocol (outside the accounts' SharedKey
/// signing: nodes authenticate with their pool's join token).
pub(super) fn router() -> Router<Service> {
    Router::new()
        .route("/v1/nodes", post(register))
        .route("/v1/nodes/{node}", axum::routing::delete(deregister))
        .route("/v1/nodes/{node}/heartbeat", post(heartbeat))
        .route("/v1/nodes/{node}/lease", post(lease))
        .route("/v1/nodes/{node}/start-task", post(start_task_finished))
        .route(
            "/v1/nodes/{node}/commit",
            post(commit).layer(DefaultBodyLimit::max(MAX_COMMIT_BODY)),
        )
        .route("/v1/nodes/{node}/files/{sha256}", get(fetch_file))
        .route(
            "/v1/nodes/{node}/uploads/{job}/{seq}/{attempt}",
            put(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/nodes/{node}/artifacts/{*key}", get(fetch_artifact))
}

/// A request with a valid join token: the pool it is for.
struct PoolCaller(NodePool);

impl FromRequestParts<Service> for PoolCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        let refused = |why: &str| ApiError::from(NodeError::TokenRefused(why.to_owned()));
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| refused("the request has no Authorization header"))?
            .to_str()
            .map_err(|_| refused("the Authorization header is not ASCII"))?;
        let credentials = header
            .strip_prefix(NODE_SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| refused("the Authorization header is not `TesseraNode POOL:TOKEN`"))?;
        let (pool, token) = credentials
            .rsplit_once(':')
            .ok_or_else(|| refused("the Authorization header is not `TesseraNode POOL:TOKEN`"))?;
        Ok(Self(service.authenticate_node(pool, token).await?))
    }
}

/// A request of a registered node of the token's pool: the node's id and
/// its pool.
struct NodeCaller(String, NodePool);

impl FromRequestParts<Service> for NodeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        let PoolCaller(pool) = PoolCaller::from_request_parts(parts, service).await?;
        let node = parts
            .uri
            .path()
            .strip_prefix("/v1/nodes/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let key = parts
            .headers
            .get(NODE_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        service.authenticate_pool_node(&pool, &node, key).await?;
        Ok(Self(node, pool))
    }
}

async fn register(
    State(service): State<Service>,
    PoolCaller(pool): PoolCaller,
    JsonBody(registration): JsonBody<NodeRegistration>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    if registration.pool != pool.id {
        return Err(NodeError::TokenRefused(format!(
            "the token is for pool `{}`, not `{}`",
            pool.id, registration.pool
        ))
        .into());
    }
    let registered = service.scheduler().register(registration).await?;
    Ok((StatusCode::CREATED, Json(registered)))
}

async fn heartbeat(
    State(service): State<Service>,
    NodeCaller(node, _): NodeCaller,
    QueryParams(wait): QueryParams<WaitParams>,
    JsonBody(heartbeat): JsonBody<Heartbeat>,
) -> ApiResult<Json<HeartbeatReply>> {
    if heartbeat.node_id != node {
        return Err(NodeError::Refused("the heartbeat names another node".into()).into());
    }
    let wait = Duration::from_millis(wait.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    Ok(Json(service.scheduler().heartbeat(heartbeat, wait).await?))
}

async fn lease(
    State(service): State<Service>,
    NodeCaller(node, _): NodeCaller,
    JsonBody(request): JsonBody<LeaseRequest>,
) -> ApiResult<Json<Vec<Assignment>>> {
    let wait = Duration::from_millis(request.wait_ms).min(MAX_WAIT);
    let max = request.max.clamp(1, 100_000);
    Ok(Json(service.scheduler().lease(&node, max, wait).await?))
}

async fn commit(
    State(service): State<Service>,
    NodeCaller(node, _): NodeCaller,
    JsonBody(reports): JsonBody<Vec<AttemptReport>>,
) -> ApiResult<Json<CommitReply>> {
    Ok(Json(service.scheduler().commit(&node, &reports).await?))
}

async fn start_task_finished(
    State(service): State<Service>,
    NodeCaller(node, _): NodeCaller,
    JsonBody(report): JsonBody<StartTaskReport>,
) -> ApiResult<StatusCode> {
    service
        .scheduler()
        .start_task_finished(&node, &report)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deregister(
    State(service): State<Service>,
    NodeCaller(node, _): NodeCaller,
) -> ApiResult<StatusCode> {
    service.scheduler().deregister(&node).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn fetch_file(
    State(service): State<Service>,
    NodeCaller(_, pool): NodeCaller,
    PathParams((_, sha256)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    let digest = parse_digest(&sha256)?;
    check_readable(&service, &pool, &digest).await?;
    let stream = service.blobs().get_stream(&digest, None).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        Body::from_stream(stream.map_err(|e| std::io::Error::other(e.to_string()))),
    )
        .into_response())
}

async fn fetch_artifact(
    State(service): State<Service>,
    NodeCaller(_, pool): NodeCaller,
    PathParams((_, key)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    // Artifact keys end with the component's digest: `…/<sha256>.cwasm`.
    let digest = key
        .rsplit('/')
        .next()
        .and_then(|name| name.strip_suffix(".cwasm"))
        .ok_or_else(|| ApiError::bad_request("invalid_path", "not an artifact key"))
        .and_then(parse_digest)?;
    check_readable(&service, &pool, &digest).await?;
    match service.blobs().get_artifact(&key).await? {
        Some(bytes) => Ok(bytes.into_response()),
        None => Err(tessera_framework::error::Error::not_found("artifact", key).into()),
    }
}

async fn upload(
    State(service): State<Service>,
    NodeCaller(node, _): NodeCaller,
    PathParams((_, job_id, seq, attempt)): PathParams<(String, String, i64, u32)>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Uploaded>)> {
    let key = AttemptKey {
        job_id,
        seq,
        attempt,
    };
    let limit = service.config().max_upload_bytes;
    let uploaded = service
        .scheduler()
        .store_upload_stream(&node, &key, body.into_data_stream(), limit)
        .await?;
    Ok((StatusCode::CREATED, Json(uploaded)))
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse()
        .map_err(|e: tessera_framework::digest::BadDigest| {
            ApiError::bad_request("invalid_digest", e.to_string())
        })
}

/// Refuses a file the node's pool may not read (as if it did not exist).
async fn check_readable(service: &Service, pool: &NodePool, digest: &Digest) -> ApiResult<()> {
    if service.node_may_read(pool, digest).await? {
        Ok(())
    } else {
        Err(tessera_framework::error::Error::not_found("file", digest.to_hex()).into())
    }
}
