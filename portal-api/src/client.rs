//! A typed client of the portal API, used by the `tessera` command and the
//! end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tessera_framework::accounts::{AccountInfo, AccountKeys, KeyName, NewAccount, Quotas};
use tessera_framework::auth;
use tessera_framework::digest::Digest;
use tessera_framework::jobs::{JobPage, SubmitJob, TaskPage};
use tessera_framework::model::{
    AppSummary, AppVersion, FileRef, Job, JobState, LogStream, Output, OutputKind, TaskDetail,
    TaskState,
};
use tessera_framework::pools::{AutoscaleRun, NewPool, Pool, PoolChange};
use tokio::io::AsyncWriteExt;

use crate::server::{
    AppDetail, DigestList, ErrorBody, Evaluate, MissingFiles, PublishFiles, Resize,
};

/// What can go wrong talking to the service.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's stable code.
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The service could not be reached.
    #[error(
        "cannot reach the Tessera service at {url}: {source}. Is `tessera serve` running there? (set the address with --url or TESSERA_URL)"
    )]
    Unreachable {
        /// The service's address.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The transfer failed part-way, or the answer was not understood.
    #[error("talking to the service failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Local file I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The account key is not usable.
    #[error("the account key is not usable: {0} (set TESSERA_KEY to one of the account's keys)")]
    BadKey(String),
    /// The URL is not usable.
    #[error("`{0}` is not a valid service URL (expected something like http://127.0.0.1:7878)")]
    BadUrl(String),
}

impl ClientError {
    /// The error's code, if the service sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// A client of one Tessera service. With [credentials](Self::with_credentials)
/// it signs every request (see [`tessera_framework::auth`]).
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    credentials: Option<Credentials>,
}

/// An account and its key, decoded.
#[derive(Clone)]
struct Credentials {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the service at `url` (e.g. `http://127.0.0.1:7878`).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            base,
            http,
            credentials: None,
        })
    }

    /// The same client, signing its requests as `account` with `key` (one
    /// of the account's two keys, base64).
    pub fn with_credentials(mut self, account: &str, key: &str) -> Result<Self, ClientError> {
        let key = auth::decode_key(key).map_err(|e| ClientError::BadKey(e.to_string()))?;
        self.credentials = Some(Credentials {
            account: account.to_owned(),
            key,
        });
        Ok(self)
    }

    /// The account requests are signed for, if any.
    pub fn account(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.account.as_str())
    }

    /// Adds the date, body digest and signature headers to `request`.
    /// A streamed body whose digest is not given by a
    /// [`auth::CONTENT_SHA256_HEADER`] header is read into memory to hash it.
    async fn sign(&self, request: &mut reqwest::Request) -> Result<(), ClientError> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let headers = request.headers();
        let content_sha256 = match headers.get(auth::CONTENT_SHA256_HEADER) {
            Some(given) => given.to_str().unwrap_or_default().to_owned(),
            None => {
                let digest = match request.body_mut().take() {
                    None => Digest::of(b""),
                    Some(body) => {
                        let bytes = match body.as_bytes() {
                            Some(bytes) => Bytes::copy_from_slice(bytes),
                            None => http_body_util::BodyExt::collect(body).await?.to_bytes(),
                        };
                        let digest = Digest::of(&bytes);
                        *request.body_mut() = Some(bytes.into());
                        digest
                    }
                };
                digest.to_hex()
            }
        };
        let date = auth::format_date(chrono::Utc::now());
        let content_type = request
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let url = request.url();
        let canonical = auth::canonical_string(
            request.method().as_str(),
            url.path(),
            url.query(),
            &content_type,
            &content_sha256,
            &date,
        );
        let signature = auth::sign(&credentials.key, &canonical);
        let headers = request.headers_mut();
        let value = |v: String| {
            reqwest::header::HeaderValue::from_str(&v)
                .map_err(|e| ClientError::BadKey(format!("cannot send a header: {e}")))
        };
        headers.insert(auth::DATE_HEADER, value(date)?);
        headers.insert(auth::CONTENT_SHA256_HEADER, value(content_sha256)?);
        headers.insert(
            reqwest::header::AUTHORIZATION,
            value(auth::authorization(&credentials.account, &signature))?,
        );
        Ok(())
    }

    /// The service's address.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A request to `path` (under the service's URL), for what the typed
    /// methods do not cover; send it with [`execute`](Self::execute).
    pub fn raw(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
    }

    /// Signs and sends a request built with [`raw`](Self::raw); returns the
    /// response whatever its status.
    pub async fn execute(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let mut request = request.build()?;
        self.sign(&mut request).await?;
        self.http.execute(request).await.map_err(|e| {
            if e.is_connect() {
                ClientError::Unreachable {
                    url: self.base.clone(),
                    source: e,
                }
            } else {
                ClientError::Http(e)
            }
        })
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = self.execute(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                code: body.code,
                message: body.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "http_error".into(),
                message: format!(
                    "the service answered {status}: {}",
                    text.chars().take(500).collect::<String>()
                ),
            },
        })
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        Ok(self.send(request).await?.json().await?)
    }

    /// Whether the service is up and ready.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.send(self.request(Method::GET, "/healthz")).await?;
        Ok(())
    }

    /// Publishes a new version of an application from zips on disk: uploads
    /// each (streamed, skipped when the service already has it for this
    /// account), then publishes them by their sha256.
    pub async fn publish(
        &self,
        name: &str,
        assembly: &Path,
        image: Option<&Path>,
    ) -> Result<AppVersion, ClientError> {
        let assembly = self.upload_file(assembly).await?.sha256;
        let image = match image {
            Some(image) => Some(self.upload_file(image).await?.sha256),
            None => None,
        };
        self.publish_uploaded(name, assembly, image).await
    }

    /// Publishes a new version of an application from files already
    /// uploaded by this account.
    pub async fn publish_uploaded(
        &self,
        name: &str,
        assembly: Digest,
        image: Option<Digest>,
    ) -> Result<AppVersion, ClientError> {
        self.json(
            self.request(
                Method::POST,
                &format!("/v1/apps/{}/versions", segment(name)),
            )
            .json(&PublishFiles { assembly, image }),
        )
        .await
    }

    /// Publishes a new version of an application from zips in memory.
    pub async fn publish_bytes(
        &self,
        name: &str,
        assembly: Vec<u8>,
        image: Option<Vec<u8>>,
    ) -> Result<AppVersion, ClientError> {
        let part = |bytes: Vec<u8>, file: &'static str| {
            reqwest::multipart::Part::bytes(bytes).file_name(file)
        };
        let mut form =
            reqwest::multipart::Form::new().part("assembly", part(assembly, "assembly.zip"));
        if let Some(image) = image {
            form = form.part("image", part(image, "image.zip"));
        }
        self.json(
            self.request(
                Method::POST,
                &format!("/v1/apps/{}/versions", segment(name)),
            )
            .multipart(form),
        )
        .await
    }

    /// The applications.
    pub async fn apps(&self) -> Result<Vec<AppSummary>, ClientError> {
        self.json(self.request(Method::GET, "/v1/apps")).await
    }

    /// An application with its versions.
    pub async fn app(&self, name: &str) -> Result<AppDetail, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/apps/{}", segment(name))))
            .await
    }

    /// One version of an application.
    pub async fn app_version(&self, name: &str, version: u32) -> Result<AppVersion, ClientError> {
        self.json(self.request(
            Method::GET,
            &format!("/v1/apps/{}/versions/{version}", segment(name)),
        ))
        .await
    }

    /// Which of these files the service does not have.
    pub async fn missing_files(&self, digests: &[Digest]) -> Result<Vec<Digest>, ClientError> {
        let body = DigestList {
            sha256: digests.to_vec(),
        };
        let missing: MissingFiles = self
            .json(self.request(Method::POST, "/v1/files/missing").json(&body))
            .await?;
        Ok(missing.missing)
    }

    /// Uploads a local file unless the service already has it.
    pub async fn upload_file(&self, path: &Path) -> Result<FileRef, ClientError> {
        let owned = path.to_path_buf();
        let (sha256, size) = tokio::task::spawn_blocking(move || Digest::of_file(&owned))
            .await
            .map_err(|e| ClientError::io("hashing")(std::io::Error::other(e)))?
            .map_err(ClientError::io(format!("reading {}", path.display())))?;
        if self.missing_files(&[sha256]).await?.is_empty() {
            return Ok(FileRef { sha256, size });
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(ClientError::io(format!("opening {}", path.display())))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.json(
            self.request(Method::PUT, &format!("/v1/files/{sha256}"))
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header(auth::CONTENT_SHA256_HEADER, sha256.to_hex())
                .body(body),
        )
        .await
    }

    /// Uploads bytes unless the service already has them.
    pub async fn upload_bytes(&self, bytes: Bytes) -> Result<FileRef, ClientError> {
        let sha256 = Digest::of(&bytes);
        self.json(
            self.request(Method::PUT, &format!("/v1/files/{sha256}"))
                .body(bytes),
        )
        .await
    }

    /// Creates an account (admins only); returns its keys.
    pub async fn create_account(&self, request: &NewAccount) -> Result<AccountKeys, ClientError> {
        self.json(self.request(Method::POST, "/v1/accounts").json(request))
            .await
    }

    /// The accounts the caller sees (all of them for an admin).
    pub async fn accounts(&self) -> Result<Vec<AccountInfo>, ClientError> {
        self.json(self.request(Method::GET, "/v1/accounts")).await
    }

    /// An account's two keys.
    pub async fn account_keys(&self, name: &str) -> Result<AccountKeys, ClientError> {
        let path = format!("/v1/accounts/{}/keys", segment(name));
        self.json(self.request(Method::GET, &path)).await
    }

    /// Replaces one of an account's keys; returns both.
    pub async fn regenerate_key(
        &self,
        name: &str,
        which: KeyName,
    ) -> Result<AccountKeys, ClientError> {
        let which = match which {
            KeyName::Primary => "primary",
            KeyName::Secondary => "secondary",
        };
        let path = format!("/v1/accounts/{}/keys/{which}/regenerate", segment(name));
        self.json(self.request(Method::POST, &path)).await
    }

    /// Sets an account's quotas (admins only).
    pub async fn set_quotas(
        &self,
        name: &str,
        quotas: &Quotas,
    ) -> Result<AccountInfo, ClientError> {
        let path = format!("/v1/accounts/{}/quotas", segment(name));
        self.json(self.request(Method::PUT, &path).json(quotas))
            .await
    }

    /// Creates a pool owned by the caller.
    pub async fn create_pool(&self, request: &NewPool) -> Result<Pool, ClientError> {
        self.json(self.request(Method::POST, "/v1/pools").json(request))
            .await
    }

    /// The pools the caller may use: its own and the shared ones.
    pub async fn pools(&self) -> Result<Vec<Pool>, ClientError> {
        self.json(self.request(Method::GET, "/v1/pools")).await
    }

    /// A pool, with its nodes and the work waiting for it.
    pub async fn pool(&self, name: &str) -> Result<Pool, ClientError> {
        let path = format!("/v1/pools/{}", segment(name));
        self.json(self.request(Method::GET, &path)).await
    }

    /// Changes some of one of the caller's pools' properties.
    pub async fn update_pool(&self, name: &str, change: &PoolChange) -> Result<Pool, ClientError> {
        let path = format!("/v1/pools/{}", segment(name));
        self.json(self.request(Method::PATCH, &path).json(change))
            .await
    }

    /// Evaluates an autoscale formula (the pool's own when `formula` is
    /// `None`) for one of the caller's pools, applying nothing.
    pub async fn evaluate_autoscale(
        &self,
        name: &str,
        formula: Option<&str>,
    ) -> Result<AutoscaleRun, ClientError> {
        let path = format!("/v1/pools/{}/autoscale/evaluate", segment(name));
        let body = Evaluate {
            formula: formula.map(str::to_owned),
        };
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Sets one of the caller's pools' target node count.
    pub async fn resize_pool(&self, name: &str, target_nodes: u32) -> Result<Pool, ClientError> {
        let path = format!("/v1/pools/{}/resize", segment(name));
        self.json(
            self.request(Method::POST, &path)
                .json(&Resize { target_nodes }),
        )
        .await
    }

    /// One of the caller's pools with its join token, replacing the token
    /// first if `regenerate`.
    pub async fn pool_token(&self, name: &str, regenerate: bool) -> Result<Pool, ClientError> {
        let path = if regenerate {
            format!("/v1/pools/{}/token/regenerate", segment(name))
        } else {
            format!("/v1/pools/{}/token", segment(name))
        };
        let method = if regenerate {
            Method::POST
        } else {
            Method::GET
        };
        self.json(self.request(method, &path)).await
    }

    /// Deletes one of the caller's pools.
    pub async fn delete_pool(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/pools/{}", segment(name));
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// Submits a job.
    pub async fn submit(&self, request: &SubmitJob) -> Result<Job, ClientError> {
        self.json(self.request(Method::POST, "/v1/jobs").json(request))
            .await
    }

    /// A page of jobs, newest first.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<JobPage, ClientError> {
        let query = page_query(state.map(|s| s.to_string()), ("before", before), limit);
        self.json(self.request(Method::GET, "/v1/jobs").query(&query))
            .await
    }

    /// A job with its progress.
    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/jobs/{}", segment(id))))
            .await
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/jobs/{}/cancel", segment(id))))
            .await
    }

    /// Runs a finished job's failed tasks again.
    pub async fn reprocess(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/jobs/{}/reprocess", segment(id))))
            .await
    }

    /// A page of a job's tasks.
    pub async fn tasks(
        &self,
        id: &str,
        state: Option<TaskState>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<TaskPage, ClientError> {
        let query = page_query(state.map(|s| s.to_string()), ("after", after), limit);
        self.json(
            self.request(Method::GET, &format!("/v1/jobs/{}/tasks", segment(id)))
                .query(&query),
        )
        .await
    }

    /// A task with its attempts.
    pub async fn task(&self, id: &str, name: &str) -> Result<TaskDetail, ClientError> {
        self.json(self.request(
            Method::GET,
            &format!("/v1/jobs/{}/tasks/{}", segment(id), segment(name)),
        ))
        .await
    }

    /// A task attempt's stdout or stderr (the latest attempt by default).
    pub async fn log(
        &self,
        id: &str,
        name: &str,
        stream: LogStream,
        attempt: Option<u32>,
    ) -> Result<Bytes, ClientError> {
        let which = match stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        };
        let mut request = self.request(
            Method::GET,
            &format!("/v1/jobs/{}/tasks/{}/{which}", segment(id), segment(name)),
        );
        if let Some(a) = attempt {
            request = request.query(&[("attempt", a)]);
        }
        Ok(self.send(request).await?.bytes().await?)
    }

    /// Every output of a job.
    pub async fn outputs(&self, id: &str) -> Result<Vec<Output>, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/jobs/{}/outputs", segment(id))))
            .await
    }

    /// The outputs of a job of one kind (for example its previews).
    pub async fn outputs_of_kind(
        &self,
        id: &str,
        kind: OutputKind,
    ) -> Result<Vec<Output>, ClientError> {
        let path = format!("/v1/jobs/{}/outputs?kind={kind}", segment(id));
        self.json(self.request(Method::GET, &path)).await
    }

    /// One output's content.
    pub async fn output_bytes(&self, id: &str, output: &Output) -> Result<Bytes, ClientError> {
        Ok(self
            .send(self.request(Method::GET, &output_path(id, output)))
            .await?
            .bytes()
            .await?)
    }

    /// Downloads one output to a local file.
    pub async fn download_output(
        &self,
        id: &str,
        output: &Output,
        dest: &Path,
    ) -> Result<(), ClientError> {
        let response = self
            .send(self.request(Method::GET, &output_path(id, output)))
            .await?;
        save(response, dest).await
    }

    /// Downloads every output of a job into `dir` (job outputs at the top,
    /// task outputs under `tasks/<task>/`); returns the files written.
    pub async fn download_outputs(
        &self,
        id: &str,
        dir: &Path,
    ) -> Result<Vec<PathBuf>, ClientError> {
        let mut written = Vec::new();
        for output in self.outputs(id).await? {
            let relative = match &output.task {
                Some(task) => PathBuf::from("tasks").join(task).join(&output.path),
                None => PathBuf::from(&output.path),
            };
            let dest = dir.join(relative);
            self.download_output(id, &output, &dest).await?;
            written.push(dest);
        }
        Ok(written)
    }

    /// Downloads every output of a job as one zip.
    pub async fn download_zip(&self, id: &str, dest: &Path) -> Result<(), ClientError> {
        let response = self
            .send(self.request(
                Method::GET,
                &format!("/v1/jobs/{}/outputs.zip", segment(id)),
            ))
            .await?;
        save(response, dest).await
    }

    /// Polls a job until it finishes, calling `on_progress` with each state.
    pub async fn wait(
        &self,
        id: &str,
        poll: Duration,
        mut on_progress: impl FnMut(&Job),
    ) -> Result<Job, ClientError> {
        loop {
            let job = self.job(id).await?;
            on_progress(&job);
            if job.state.is_finished() {
                return Ok(job);
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// The query string of a paged list: a state filter, a cursor and a limit.
fn page_query<'a>(
    state: Option<String>,
    (cursor_name, cursor): (&'a str, Option<&str>),
    limit: Option<u32>,
) -> Vec<(&'a str, String)> {
    let mut query = Vec::new();
    query.extend(state.map(|s| ("state", s)));
    query.extend(cursor.map(|c| (cursor_name, c.to_owned())));
    query.extend(limit.map(|l| ("limit", l.to_string())));
    query
}

/// Whether an error means "not found".
pub fn is_not_found(e: &ClientError) -> bool {
    e.status() == Some(StatusCode::NOT_FOUND.as_u16())
}

fn output_path(id: &str, output: &Output) -> String {
    let path: Vec<String> = output.path.split('/').map(segment).collect();
    match &output.task {
        Some(task) => format!(
            "/v1/jobs/{}/tasks/{}/outputs/{}",
            segment(id),
            segment(task),
            path.join("/")
        ),
        None => format!("/v1/jobs/{}/outputs/{}", segment(id), path.join("/")),
    }
}

/// Percent-encodes one path segment.
pub(crate) fn segment(s: &str) -> String {
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

/// Streams a response body into a file, atomically.
async fn save(response: reqwest::Response, dest: &Path) -> Result<(), ClientError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(ClientError::io(format!("creating {}", dir.display())))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(ClientError::io(format!("writing in {}", dir.display())))?;
    let mut out = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(ClientError::io(format!("writing in {}", dir.display())))?,
    );
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)
            .await
            .map_err(ClientError::io(format!("writing {}", dest.display())))?;
    }
    out.flush()
        .await
        .map_err(ClientError::io(format!("writing {}", dest.display())))?;
    tmp.persist(dest)
        .map_err(|e| ClientError::io(format!("writing {}", dest.display()))(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("batch-0001.x_y~"), "batch-0001.x_y~");
    }

    #[test]
    fn urls_must_be_http() {
        assert!(matches!(
            Client::new("localhost:1"),
            Err(ClientError::BadUrl(_))
        ));
        assert_eq!(Client::new("http://h:1/").unwrap().url(), "http://h:1");
    }
}
