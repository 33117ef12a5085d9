//! The HTTP server: the portal API under `/v1`, plus `/healthz`.
//!
//! Handlers are thin: they parse the request, name the caller's account, and
//! call one [`Service`] method. Every error a client sees is
//! `{"code": "...", "message": "..."}` with a status from the error's class.

use std::future::Future;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tessera_framework::accounts::{AccountInfo, AccountKeys, Caller, KeyName, NewAccount, Quotas};
use tessera_framework::auth::{self, AuthError};
use tessera_framework::blobs::Spooled;
use tessera_framework::digest::Digest;
use tessera_framework::digest::{BadDigest, HashingWriter};
use tessera_framework::error::{Error, ErrorClass};
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{FileRef, JobState, LogStream, Output, OutputKind, TaskState};
use tessera_framework::pools::{AutoscaleRun, NewPool, Pool, PoolChange};
use tessera_framework::service::Service;

mod nodes;

pub use nodes::{LeaseRequest, NODE_KEY_HEADER, NODE_SCHEME, WaitParams};

/// Largest JSON request body.
const MAX_JSON_BODY: usize = 4 << 20;

/// The error body of every failed request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable snake_case code.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

/// An error on its way to the client.
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.class() {
            ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
            ErrorClass::NotFound => StatusCode::NOT_FOUND,
            ErrorClass::Conflict => StatusCode::CONFLICT,
            ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorClass::Forbidden => StatusCode::FORBIDDEN,
            ErrorClass::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::Internal => {
                tracing::error!(error = %e, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// JSON bodies whose rejections are [`ApiError`]s.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match rejection {
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::JsonSyntaxError(_) => "invalid_json",
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        _ => "invalid_body",
    };
    let mut error = ApiError::bad_request(code, rejection.body_text());
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error.status = status;
        error.body.code = "too_large".into();
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        error.status = status;
    }
    error
}

/// Query strings whose rejections are [`ApiError`]s.
struct QueryParams<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters whose rejections are [`ApiError`]s.
struct PathParams<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// The account a request acts for: the one it was signed for.
struct Account(String);

impl<S: Send + Sync> FromRequestParts<S> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Signed(caller) = Signed::from_request_parts(parts, state).await?;
        Ok(Self(caller.account))
    }
}

/// The caller of a request, as [`authenticate`] verified it.
struct Signed(Caller);

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Self)
            .ok_or_else(|| Error::from(AuthError::Missing).into())
    }
}

/// Checks a request's SharedKey signature (see [`tessera_framework::auth`])
/// and records its caller; the body is checked against its declared
/// SHA-256 (small bodies before the handler runs, streamed ones as they
/// are read, failing the request at the end if they differ).
async fn authenticate(State(service): State<Service>, request: Request, next: Next) -> Response {
    match verify_request(&service, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn verify_request(service: &Service, request: Request) -> Result<Request, Error> {
    let headers = request.headers();
    let text = |name: &'static str| -> Result<&str, AuthError> {
        headers
            .get(name)
            .ok_or_else(|| AuthError::BadHeader(name, "it is missing".into()))?
            .to_str()
            .map_err(|_| AuthError::BadHeader(name, "it is not ASCII".into()))
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (account, signature) = auth::parse_authorization(authorization)?;
    let date = text(auth::DATE_HEADER)?;
    auth::check_date(date, chrono::Utc::now())?;
    let content_sha256 = text(auth::CONTENT_SHA256_HEADER)?;
    let expected: Digest = content_sha256
        .parse()
        .map_err(|e: BadDigest| AuthError::BadHeader(auth::CONTENT_SHA256_HEADER, e.to_string()))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let uri = request.uri();
    let canonical = auth::canonical_string(
        request.method().as_str(),
        uri.path(),
        uri.query(),
        content_type,
        content_sha256,
        date,
    );
    let caller = service.authenticate(account, &canonical, signature).await?;
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|len| len <= MAX_JSON_BODY);
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(caller);
    let body = if small {
        let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|e| Error::Invalid(format!("reading the request body failed: {e}")))?;
        if Digest::of(&bytes) != expected {
            return Err(AuthError::BodyMismatch.into());
        }
        Body::from(bytes)
    } else {
        Body::from_stream(DigestChecked::new(body.into_data_stream(), expected))
    };
    Ok(Request::from_parts(parts, body))
}

/// A body stream that fails at its end if its content's SHA-256 is not the
/// expected one.
struct DigestChecked<S> {
    inner: S,
    hasher: Option<HashingWriter<std::io::Sink>>,
    expected: Digest,
}

impl<S> DigestChecked<S> {
    fn new(inner: S, expected: Digest) -> Self {
        Self {
            inner,
            hasher: Some(HashingWriter::new(std::io::sink())),
            expected,
        }
    }
}

impl<S> futures::Stream for DigestChecked<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
{
    type Item = Result<bytes::Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(hasher) = self.hasher.as_mut() {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(None) => match self.hasher.take() {
                Some(hasher) => {
                    if hasher.finish().0 == self.expected {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(std::io::Error::other(AuthError::BodyMismatch))))
                    }
                }
                None => Poll::Ready(None),
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Builds the whole router.
pub fn router(service: Service) -> Router {
    let body_idle_timeout = service.config().body_idle_timeout;
    let streaming = Router::new()
        .route("/v1/files/{sha256}", put(upload_file))
        .route("/v1/apps/{name}/versions", post(publish))
        .layer(DefaultBodyLimit::disable());
    let api = Router::new()
        .route("/v1/accounts", post(create_account).get(list_accounts))
        .route("/v1/accounts/{name}/keys", get(account_keys))
        .route(
            "/v1/accounts/{name}/keys/{which}/regenerate",
            post(regenerate_key),
        )
        .route("/v1/accounts/{name}/quotas", put(set_quotas))
        .route("/v1/pools", post(create_pool).get(list_pools))
        .route(
            "/v1/pools/{name}",
            get(show_pool).delete(delete_pool).patch(update_pool),
        )
        .route("/v1/pools/{name}/resize", post(resize_pool))
        .route(
            "/v1/pools/{name}/autoscale/evaluate",
            post(evaluate_autoscale),
        )
        .route("/v1/pools/{name}/token", get(show_token))
        .route("/v1/pools/{name}/token/regenerate", post(regenerate_token))
        .route("/v1/apps", get(list_apps))
        .route("/v1/apps/{name}", get(show_app))
        .route("/v1/apps/{name}/versions", get(list_versions))
        .route("/v1/apps/{name}/versions/{version}", get(show_version))
        .route("/v1/files/missing", post(missing_files))
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(show_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/reprocess", post(reprocess_job))
        .route("/v1/jobs/{id}/tasks", get(list_tasks))
        .route("/v1/jobs/{id}/tasks/{name}", get(show_task))
        .route("/v1/jobs/{id}/tasks/{name}/{stream}", get(task_log))
        .route(
            "/v1/jobs/{id}/tasks/{name}/outputs/{*path}",
            get(task_output),
        )
        .route("/v1/jobs/{id}/outputs", get(list_outputs))
        .route("/v1/jobs/{id}/outputs.zip", get(outputs_zip))
        .route("/v1/jobs/{id}/outputs/{*path}", get(job_output))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .merge(streaming)
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .merge(nodes::router())
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                body: ErrorBody {
                    code: "no_such_route".into(),
                    message: "no such API route; the API lives under /v1".into(),
                },
            }
        })
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_idle_timeout,
        ))
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .with_state(service)
}

/// Ends the connection after an error answering a request that has a
/// body: the body may not have been read to its end (a refused upload, an
/// oversize JSON body), so the connection cannot carry another request, and
/// `Connection: close` tells the client not to reuse it.
async fn close_after_refused_body(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    let mut response = next.run(request).await;
    let status = response.status();
    if has_body && (status.is_client_error() || status.is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn create_account(
    State(service): State<Service>,
    Signed(caller): Signed,
    JsonBody(request): JsonBody<NewAccount>,
) -> ApiResult<(StatusCode, Json<AccountKeys>)> {
    let keys = service.create_account(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(keys)))
}

async fn list_accounts(
    State(service): State<Service>,
    Signed(caller): Signed,
) -> ApiResult<Json<Vec<AccountInfo>>> {
    Ok(Json(service.list_accounts(&caller).await?))
}

async fn account_keys(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<AccountKeys>> {
    Ok(Json(service.account_keys(&caller, &name).await?))
}

async fn regenerate_key(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams((name, which)): PathParams<(String, KeyName)>,
) -> ApiResult<Json<AccountKeys>> {
    Ok(Json(service.regenerate_key(&caller, &name, which).await?))
}

async fn set_quotas(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
    JsonBody(quotas): JsonBody<Quotas>,
) -> ApiResult<Json<AccountInfo>> {
    Ok(Json(service.set_quotas(&caller, &name, quotas).await?))
}

async fn create_pool(
    State(service): State<Service>,
    Signed(caller): Signed,
    JsonBody(request): JsonBody<NewPool>,
) -> ApiResult<(StatusCode, Json<Pool>)> {
    let pool = service.create_pool(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(pool)))
}

async fn list_pools(
    State(service): State<Service>,
    Account(account): Account,
) -> ApiResult<Json<Vec<Pool>>> {
    Ok(Json(service.list_pools(&account).await?))
}

async fn show_pool(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(service.pool(&account, &name).await?))
}

async fn delete_pool(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
) -> ApiResult<StatusCode> {
    service.delete_pool(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_pool(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
    JsonBody(change): JsonBody<PoolChange>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(service.update_pool(&caller, &name, &change).await?))
}

/// A resize request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// The new target node count.
    pub target_nodes: u32,
}

async fn resize_pool(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
    JsonBody(resize): JsonBody<Resize>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(
        service
            .resize_pool(&caller, &name, resize.target_nodes)
            .await?,
    ))
}

/// A formula to evaluate (the pool's own when absent).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluate {
    /// The formula.
    #[serde(default)]
    pub formula: Option<String>,
}

async fn evaluate_autoscale(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
    JsonBody(request): JsonBody<Evaluate>,
) -> ApiResult<Json<AutoscaleRun>> {
    Ok(Json(
        service
            .evaluate_autoscale(&caller, &name, request.formula.as_deref())
            .await?,
    ))
}

async fn show_token(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(service.join_token(&caller, &name, false).await?))
}

async fn regenerate_token(
    State(service): State<Service>,
    Signed(caller): Signed,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(service.join_token(&caller, &name, true).await?))
}

/// Serves the API on `listener` until `shutdown` completes, then finishes
/// the requests in flight.
pub async fn run(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// An application with all its versions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppDetail {
    /// The application's name.
    pub name: String,
    /// Every version, newest first.
    pub versions: Vec<tessera_framework::model::AppVersion>,
}

async fn list_apps(
    State(service): State<Service>,
    Account(account): Account,
) -> ApiResult<Json<Vec<tessera_framework::model::AppSummary>>> {
    Ok(Json(service.list_apps(&account).await?))
}

async fn show_app(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<AppDetail>> {
    let versions = service.app_versions(&account, &name).await?;
    Ok(Json(AppDetail { name, versions }))
}

async fn list_versions(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Vec<tessera_framework::model::AppVersion>>> {
    Ok(Json(service.app_versions(&account, &name).await?))
}

async fn show_version(
    State(service): State<Service>,
    Account(account): Account,
    PathParams((name, version)): PathParams<(String, u32)>,
) -> ApiResult<Json<tessera_framework::model::AppVersion>> {
    Ok(Json(
        service.app_version(&account, &name, Some(version)).await?,
    ))
}

/// A publish by reference: the sha256 of files the account uploaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishFiles {
    /// The cloud assembly zip.
    pub assembly: Digest,
    /// The application image zip.
    #[serde(default)]
    pub image: Option<Digest>,
}

/// Publishes from a JSON body naming uploaded files, or from a multipart
/// form carrying the zips.
async fn publish(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(name): PathParams<String>,
    request: Request,
) -> ApiResult<(StatusCode, Json<tessera_framework::model::AppVersion>)> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        // This route streams, so the JSON limit is applied here.
        let request =
            request.map(|body| Body::new(http_body_util::Limited::new(body, MAX_JSON_BODY)));
        let JsonBody(files) = JsonBody::<PublishFiles>::from_request(request, &()).await?;
        let version = service
            .publish_uploaded(&account, &name, &files.assembly, files.image.as_ref())
            .await?;
        return Ok((StatusCode::CREATED, Json(version)));
    }
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let limit = service.config().max_upload_bytes;
    let mut image: Option<Spooled> = None;
    let mut assembly: Option<Spooled> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?
    {
        let slot = match field.name() {
            Some("assembly") => &mut assembly,
            Some("image") => &mut image,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_multipart",
                    format!(
                        "unexpected form field {:?}; send `assembly` (required) and `image` (optional)",
                        other.unwrap_or("")
                    ),
                ));
            }
        };
        *slot = Some(
            service
                .blobs()
                .spool(field.map_err(|e| e.body_text()), limit)
                .await?,
        );
    }
    let assembly = assembly.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_multipart",
            "the form has no `assembly` field (the cloud assembly zip)",
        )
    })?;
    let version = service
        .publish(&account, &name, image.as_ref(), &assembly)
        .await?;
    Ok((StatusCode::CREATED, Json(version)))
}

async fn upload_file(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(sha256): PathParams<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<FileRef>)> {
    let expected: Digest = sha256
        .parse()
        .map_err(|e: tessera_framework::digest::BadDigest| {
            ApiError::bad_request("invalid_digest", e.to_string())
        })?;
    let limit = service.config().max_upload_bytes;
    let spooled = service
        .blobs()
        .spool(body.into_data_stream(), limit)
        .await?;
    let created = service
        .store_upload(&account, Some(&expected), &spooled)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(FileRef {
            sha256: spooled.digest,
            size: spooled.size,
        }),
    ))
}

/// Digests to look up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestList {
    /// The digests.
    pub sha256: Vec<Digest>,
}

/// Digests the account has not uploaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingFiles {
    /// The missing digests.
    pub missing: Vec<Digest>,
}

async fn missing_files(
    State(service): State<Service>,
    Account(account): Account,
    JsonBody(list): JsonBody<DigestList>,
) -> ApiResult<Json<MissingFiles>> {
    if list.sha256.len() > 100_000 {
        return Err(ApiError::bad_request(
            "too_many",
            "ask about at most 100000 digests at a time",
        ));
    }
    Ok(Json(MissingFiles {
        missing: service.missing_files(&account, &list.sha256).await?,
    }))
}

async fn submit_job(
    State(service): State<Service>,
    Signed(caller): Signed,
    JsonBody(request): JsonBody<SubmitJob>,
) -> ApiResult<(StatusCode, Json<tessera_framework::model::Job>)> {
    Ok((
        StatusCode::CREATED,
        Json(service.submit(&caller, request).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobListParams {
    state: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

async fn list_jobs(
    State(service): State<Service>,
    Account(account): Account,
    QueryParams(q): QueryParams<JobListParams>,
) -> ApiResult<Json<tessera_framework::jobs::JobPage>> {
    let state = q
        .state
        .map(|s| s.parse::<JobState>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e))?;
    Ok(Json(
        service
            .list_jobs(&account, state, q.before.as_deref(), q.limit.unwrap_or(50))
            .await?,
    ))
}

async fn show_job(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<tessera_framework::model::Job>> {
    Ok(Json(service.job(&account, &id).await?))
}

async fn cancel_job(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<tessera_framework::model::Job>> {
    Ok(Json(service.cancel(&account, &id).await?))
}

async fn reprocess_job(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<tessera_framework::model::Job>> {
    Ok(Json(service.reprocess(&account, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskListParams {
    state: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_tasks(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<TaskListParams>,
) -> ApiResult<Json<tessera_framework::jobs::TaskPage>> {
    let state = q
        .state
        .map(|s| s.parse::<TaskState>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e))?;
    Ok(Json(
        service
            .tasks(
                &account,
                &id,
                state,
                q.after.as_deref(),
                q.limit.unwrap_or(100),
            )
            .await?,
    ))
}

async fn show_task(
    State(service): State<Service>,
    Account(account): Account,
    PathParams((id, name)): PathParams<(String, String)>,
) -> ApiResult<Json<tessera_framework::model::TaskDetail>> {
    Ok(Json(service.task(&account, &id, &name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    attempt: Option<u32>,
}

async fn task_log(
    State(service): State<Service>,
    Account(account): Account,
    PathParams((id, name, stream)): PathParams<(String, String, String)>,
    QueryParams(q): QueryParams<LogParams>,
) -> ApiResult<Response> {
    let stream = match stream.as_str() {
        "stdout" | "stdout.txt" => LogStream::Stdout,
        "stderr" | "stderr.txt" => LogStream::Stderr,
        other => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                body: ErrorBody {
                    code: "no_such_route".into(),
                    message: format!("`{other}` is not a task log; use stdout or stderr"),
                },
            });
        }
    };
    let (attempt, bytes) = service
        .task_log(&account, &id, &name, stream, q.attempt)
        .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::HeaderName::from_static("x-tessera-attempt"),
                HeaderValue::from(attempt),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputListParams {
    kind: Option<OutputKind>,
}

async fn list_outputs(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<OutputListParams>,
) -> ApiResult<Json<Vec<Output>>> {
    let mut outputs = service.outputs(&account, &id).await?;
    if let Some(kind) = q.kind {
        outputs.retain(|o| o.kind == kind);
    }
    Ok(Json(outputs))
}

async fn job_output(
    State(service): State<Service>,
    Account(account): Account,
    PathParams((id, path)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let output = service.output(&account, &id, None, &path).await?;
    download(&service, &output, &headers).await
}

async fn task_output(
    State(service): State<Service>,
    Account(account): Account,
    PathParams((id, name, path)): PathParams<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let output = service.output(&account, &id, Some(&name), &path).await?;
    download(&service, &output, &headers).await
}

/// An output's content: whole, or the one byte range a `Range` header
/// asks for (several ranges, or an `If-Range` naming other content, get the
/// whole file).
async fn download(service: &Service, output: &Output, headers: &HeaderMap) -> ApiResult<Response> {
    let etag = format!("\"{}\"", output.sha256);
    let range = requested_range(headers, &etag, output.size)?;
    let filename = output.path.rsplit('/').next().unwrap_or("output");
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            filename.replace('"', "")
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
    );
    response_headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"\"")),
    );
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, bytes, length) = match range {
        None => (StatusCode::OK, None, output.size),
        Some(range) => {
            let (first, last) = (*range.start(), *range.end());
            response_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{}", output.size))
                    .expect("digits and punctuation"),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                Some(first..last + 1),
                last + 1 - first,
            )
        }
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let stream = service.read_file(&output.sha256, bytes).await?;
    Ok((
        status,
        response_headers,
        Body::from_stream(stream.map_err(|e| std::io::Error::other(e.to_string()))),
    )
        .into_response())
}

/// The byte range a request asks for, if it asks for exactly one that
/// applies to this content; a range outside the content is refused (416).
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> ApiResult<Option<std::ops::RangeInclusive<u64>>> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    if headers
        .get(header::IF_RANGE)
        .is_some_and(|v| v.as_bytes() != etag.as_bytes())
    {
        return Ok(None);
    }
    let unsatisfiable = || ApiError {
        status: StatusCode::RANGE_NOT_SATISFIABLE,
        body: ErrorBody {
            code: "range_not_satisfiable".into(),
            message: format!(
                "the Range header {:?} asks for bytes this {size}-byte file does not have; \
                 give bytes=FIRST-LAST within 0-{}",
                String::from_utf8_lossy(value.as_bytes()),
                size.saturating_sub(1)
            ),
        },
    };
    let text = value.to_str().map_err(|_| unsatisfiable())?;
    let mut ranges = http_range_header::parse_range_header(text)
        .and_then(|parsed| parsed.validate(size))
        .map_err(|_| unsatisfiable())?;
    Ok(if ranges.len() == 1 {
        ranges.pop()
    } else {
        None
    })
}

async fn outputs_zip(
    State(service): State<Service>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let file = service.outputs_zip(&account, &id).await?;
    let size = file.as_file().metadata().map_err(Error::from)?.len();
    // Unlinking now is safe: the open handle keeps the content readable.
    let (handle, path) = file.into_parts();
    drop(path);
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(handle));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/zip"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(size)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{id}-outputs.zip\""))
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
