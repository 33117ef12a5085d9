//! Files: content-addressed blobs in an `object_store`.
//!
//! Every file Tessera keeps (uploaded inputs, application zips, components,
//! task outputs, attempt logs) is stored once under its sha256, so uploading
//! the same content again is free and nothing is ever overwritten with
//! different bytes. Precompiled component artifacts are the one exception:
//! they are derived data, stored under a key that names the engine they
//! were compiled for.
//!
//! The store is reached only through `object_store`, so a local folder (the
//! default), Azure Blob Storage and S3 are interchangeable ([`Storage`]
//! names which); nothing here assumes a blob is a local path, and no
//! blocking file I/O runs on the async reactor.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, PutPayload, WriteMultipart};
use tokio::io::AsyncWriteExt;

use crate::digest::{Digest, HashingWriter};
use crate::error::Error;

/// Files above this size are uploaded in parts rather than read whole.
const MULTIPART_THRESHOLD: u64 = 8 << 20;

/// A file received from a client, hashed and held in a local temporary file
/// until it is either stored or dropped.
pub struct Spooled {
    file: tempfile::NamedTempFile,
    /// The content's sha256.
    pub digest: Digest,
    /// The content's size.
    pub size: u64,
}

impl Spooled {
    /// The local path of the spooled content.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Where a service keeps its files, as given to `--storage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A local folder.
    Local(PathBuf),
    /// An Azure Blob Storage container (`az://container[/prefix]`); the
    /// account and its key or SAS come from the usual `AZURE_STORAGE_*`
    /// environment variables.
    Azure {
        /// The container, which must exist.
        container: String,
        /// A folder inside it ("" for its root).
        prefix: String,
    },
    /// An S3 bucket (`s3://bucket[/prefix]`) on AWS or an S3-compatible
    /// endpoint; region, keys and endpoint come from the usual `AWS_*`
    /// environment variables.
    S3 {
        /// The bucket, which must exist.
        bucket: String,
        /// A folder inside it ("" for its root).
        prefix: String,
    },
}

impl Storage {
    /// Parses a storage location: `az://container[/prefix]`,
    /// `s3://bucket[/prefix]`, or a local folder.
    pub fn parse(location: &str) -> Result<Self, Error> {
        let Some((scheme, rest)) = location.split_once("://") else {
            if location.is_empty() {
                return Err(Error::Config("the storage location is empty".into()));
            }
            return Ok(Self::Local(PathBuf::from(location)));
        };
        if scheme == "file" {
            return Ok(Self::Local(PathBuf::from(rest)));
        }
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_string();
        if name.is_empty() {
            return Err(Error::Config(format!(
                "the storage location `{location}` names no container or bucket \
                 (give az://container or s3://bucket)"
            )));
        }
        match scheme {
            "az" | "azure" => Ok(Self::Azure {
                container: name.to_string(),
                prefix,
            }),
            "s3" => Ok(Self::S3 {
                bucket: name.to_string(),
                prefix,
            }),
            other => Err(Error::Config(format!(
                "the storage location `{location}` has the unknown scheme `{other}`: \
                 give a local folder, az://container or s3://bucket"
            ))),
        }
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, name, prefix) = match self {
            Self::Local(path) => return write!(f, "{}", path.display()),
            Self::Azure { container, prefix } => ("az", container, prefix),
            Self::S3 { bucket, prefix } => ("s3", bucket, prefix),
        };
        write!(f, "{scheme}://{name}")?;
        if !prefix.is_empty() {
            write!(f, "/{prefix}")?;
        }
        Ok(())
    }
}

/// The content-addressed file store; cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    spool: PathBuf,
}

impl BlobStore {
    /// A store in a local folder; `spool` holds uploads in progress.
    pub fn local(root: &Path, spool: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(spool)?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new_with_prefix(root)?),
            spool: spool.to_path_buf(),
        })
    }

    /// Opens the store at `storage` and checks that it answers (so that
    /// wrong credentials or a missing container fail at start, not at the
    /// first upload); `spool` is a local folder for uploads in progress.
    pub async fn open(storage: &Storage, spool: &Path) -> Result<Self, Error> {
        let (store, prefix): (Arc<dyn ObjectStore>, &str) = match storage {
            Storage::Local(root) => return Self::local(root, spool),
            Storage::Azure { container, prefix } => {
                let store = MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .build()
                    .map_err(|e| {
                        Error::Config(format!(
                            "cannot use the Azure Blob container `{container}`: {e}; set \
                             AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or \
                             AZURE_STORAGE_SAS_KEY), or AZURE_STORAGE_USE_EMULATOR=true for Azurite"
                        ))
                    })?;
                (Arc::new(store), prefix)
            }
            Storage::S3 { bucket, prefix } => {
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| {
                        Error::Config(format!(
                            "cannot use the S3 bucket `{bucket}`: {e}; set AWS_REGION, \
                             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT \
                             for an S3-compatible service)"
                        ))
                    })?;
                (Arc::new(store), prefix)
            }
        };
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        Self::probe(store, storage, spool).await
    }

    /// A store over `store`, once it has answered a request.
    async fn probe(
        store: Arc<dyn ObjectStore>,
        storage: &Storage,
        spool: &Path,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(spool)?;
        match store.head(&ObjectPath::from("tessera-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "the file store {storage} does not answer: {e}"
                )));
            }
        }
        Ok(Self {
            store,
            spool: spool.to_path_buf(),
        })
    }

    fn key(digest: &Digest) -> ObjectPath {
        let hex = digest.to_hex();
        ObjectPath::from(format!("sha256/{}/{hex}", &hex[..2]))
    }

    fn artifact_key(key: &str) -> ObjectPath {
        ObjectPath::from(format!("artifacts/{key}"))
    }

    /// Whether a blob is stored.
    pub async fn exists(&self, digest: &Digest) -> Result<bool, Error> {
        match self.store.head(&Self::key(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores bytes; returns their digest.
    pub async fn put_bytes(&self, bytes: Bytes) -> Result<Digest, Error> {
        let digest = Digest::of(&bytes);
        if !self.exists(&digest).await? {
            self.store
                .put(&Self::key(&digest), PutPayload::from_bytes(bytes))
                .await?;
        }
        Ok(digest)
    }

    /// Stores a local file; returns its digest and size.
    pub async fn put_file(&self, path: &Path) -> Result<(Digest, u64), Error> {
        let owned = path.to_path_buf();
        let (digest, size) = tokio::task::spawn_blocking(move || Digest::of_file(&owned))
            .await
            .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))??;
        self.put_file_as(path, &digest, size).await?;
        Ok((digest, size))
    }

    /// Stores a spooled upload (whose digest the caller has checked).
    pub async fn put_spooled(&self, spooled: &Spooled) -> Result<(), Error> {
        self.put_file_as(spooled.path(), &spooled.digest, spooled.size)
            .await
    }

    async fn put_file_as(&self, path: &Path, digest: &Digest, size: u64) -> Result<(), Error> {
        if self.exists(digest).await? {
            return Ok(());
        }
        let key = Self::key(digest);
        if size <= MULTIPART_THRESHOLD {
            let bytes = tokio::fs::read(path).await?;
            self.store.put(&key, PutPayload::from(bytes)).await?;
            return Ok(());
        }
        let mut upload = WriteMultipart::new(self.store.put_multipart(&key).await?);
        let mut file = tokio::fs::File::open(path).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf).await?;
            if n == 0 {
                break;
            }
            upload.wait_for_capacity(4).await?;
            upload.write(&buf[..n]);
        }
        upload.finish().await?;
        Ok(())
    }

    /// Receives a client's upload into a local temporary file, hashing it on
    /// the way; refuses more than `limit` bytes. Nothing is stored yet.
    pub async fn spool<S, E>(&self, stream: S, limit: u64) -> Result<Spooled, Error>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let file = tempfile::NamedTempFile::new_in(&self.spool)?;
        let mut out = tokio::fs::File::from_std(file.reopen()?);
        let mut hashing = HashingWriter::new(std::io::sink());
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Error::Invalid(format!("reading the upload failed: {e}")))?;
            hashing.update(&chunk);
            if hashing.len() > limit {
                return Err(Error::TooLarge(format!(
                    "the upload is larger than the limit of {limit} bytes"
                )));
            }
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        out.sync_all().await?;
        let (digest, size) = hashing.finish();
        Ok(Spooled { file, digest, size })
    }

    /// A blob as `object_store` gives it (all of it, or the range
    /// `options` names); a missing blob is [`Error::NotFound`].
    async fn get(&self, digest: &Digest, options: GetOptions) -> Result<GetResult, Error> {
        match self.store.get_opts(&Self::key(digest), options).await {
            Ok(r) => Ok(r),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found("file", digest.to_hex()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The whole content of a blob.
    pub async fn get_bytes(&self, digest: &Digest) -> Result<Bytes, Error> {
        Ok(self
            .get(digest, GetOptions::default())
            .await?
            .bytes()
            .await?)
    }

    /// A blob's content, or the part `range` names (within its size), as a
    /// stream of chunks.
    pub async fn get_stream(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static, Error> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        Ok(self
            .get(digest, options)
            .await?
            .into_stream()
            .map_err(Error::from))
    }

    /// Copies a blob to a local file, atomically (a temporary file renamed
    /// into place), checking its digest on the way. The file is written and
    /// hashed on a blocking thread while chunks arrive.
    pub async fn download(&self, digest: &Digest, dest: &Path) -> Result<(), Error> {
        let dir = dest
            .parent()
            .ok_or_else(|| Error::Internal(format!("{} has no parent", dest.display())))?
            .to_path_buf();
        let stream = self.get_stream(digest, None).await?;
        let (chunks, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(8);
        let (expected, dest) = (*digest, dest.to_path_buf());
        let writer = tokio::task::spawn_blocking(move || -> Result<(), Error> {
            std::fs::create_dir_all(&dir)?;
            let tmp = tempfile::NamedTempFile::new_in(&dir)?;
            let mut out = std::io::BufWriter::new(HashingWriter::new(tmp.reopen()?));
            while let Some(chunk) = arriving.blocking_recv() {
                out.write_all(&chunk)?;
            }
            let (got, _) = out
                .into_inner()
                .map_err(|e| Error::Io(e.into_error()))?
                .finish();
            if got != expected {
                return Err(Error::Internal(format!(
                    "stored file {expected} has digest {got}: the file store is corrupt"
                )));
            }
            tmp.persist(&dest).map_err(|e| Error::Io(e.error))?;
            Ok(())
        });
        let mut stream = std::pin::pin!(stream);
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    // A closed channel means the writer stopped early; it
                    // says why.
                    if chunks.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(chunks);
        let written = writer
            .await
            .map_err(|e| Error::Internal(format!("writing a download failed: {e}")))?;
        // A broken stream also leaves a short file; its own error says more.
        match failed {
            Some(e) => Err(e),
            None => written,
        }
    }

    /// The keys of everything stored (content under `sha256/`, compiled
    /// artifacts under `artifacts/`), sorted: for checks and operations,
    /// not for the request path.
    pub async fn list(&self) -> Result<Vec<String>, Error> {
        let mut keys: Vec<String> = self
            .store
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// A stored precompiled artifact.
    pub async fn get_artifact(&self, key: &str) -> Result<Option<Bytes>, Error> {
        match self.store.get(&Self::artifact_key(key)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a precompiled artifact.
    pub async fn put_artifact(&self, key: &str, bytes: Bytes) -> Result<(), Error> {
        self.store
            .put(&Self::artifact_key(key), PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(stream: impl Stream<Item = Result<Bytes, Error>>) -> Vec<u8> {
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    /// The stores every contract test runs against: a local folder, and
    /// the blob services `TESSERA_TEST_AZURITE` and `TESSERA_TEST_S3` name
    /// (`az://container`, `s3://bucket`, with the `AZURE_*` / `AWS_*`
    /// variables set), each in a fresh folder of its own.
    async fn stores() -> Vec<(String, tempfile::TempDir, BlobStore)> {
        let dir = tempfile::tempdir().unwrap();
        let local = BlobStore::local(&dir.path().join("blobs"), &dir.path().join("spool")).unwrap();
        let mut stores = vec![("local".to_string(), dir, local)];
        for var in ["TESSERA_TEST_AZURITE", "TESSERA_TEST_S3"] {
            let Some(base) = std::env::var(var).ok().filter(|v| !v.is_empty()) else {
                eprintln!(
                    "SKIPPED: the {var} backend (set {var} to az://container or s3://bucket to run it)"
                );
                continue;
            };
            let location = format!("{base}/contract-{}", uuid::Uuid::now_v7());
            let storage = Storage::parse(&location).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = BlobStore::open(&storage, &dir.path().join("spool"))
                .await
                .unwrap_or_else(|e| panic!("{location}: {e}"));
            stores.push((location, dir, store));
        }
        stores
    }

    #[test]
    fn storage_locations_parse_and_print_back() {
        for (text, parsed) in [
            (
                "/var/lib/tessera/files",
                Storage::Local("/var/lib/tessera/files".into()),
            ),
            ("relative/files", Storage::Local("relative/files".into())),
            ("file:///srv/files", Storage::Local("/srv/files".into())),
            (
                "az://tessera",
                Storage::Azure {
                    container: "tessera".into(),
                    prefix: String::new(),
                },
            ),
            (
                "az://tessera/prod/eu/",
                Storage::Azure {
                    container: "tessera".into(),
                    prefix: "prod/eu".into(),
                },
            ),
            (
                "s3://bucket/x",
                Storage::S3 {
                    bucket: "bucket".into(),
                    prefix: "x".into(),
                },
            ),
        ] {
            assert_eq!(Storage::parse(text).unwrap(), parsed, "{text}");
        }
        assert_eq!(
            Storage::parse("az://tessera/prod/eu/").unwrap().to_string(),
            "az://tessera/prod/eu"
        );
        assert_eq!(Storage::parse("s3://b").unwrap().to_string(), "s3://b");
        for (text, message) in [
            ("", "the storage location is empty"),
            (
                "gs://bucket",
                "the storage location `gs://bucket` has the unknown scheme `gs`: give a local folder, az://container or s3://bucket",
            ),
            (
                "s3:///x",
                "the storage location `s3:///x` names no container or bucket (give az://container or s3://bucket)",
            ),
        ] {
            let err = Storage::parse(text).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{text}: {err:?}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[tokio::test]
    async fn an_unreachable_blob_service_is_refused_at_open() {
        // Nothing listens on port 9 of loopback.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::S3 {
            bucket: "nowhere".into(),
            prefix: String::new(),
        };
        let err = {
            let store = AmazonS3Builder::new()
                .with_bucket_name("nowhere")
                .with_region("us-east-1")
                .with_endpoint("http://127.0.0.1:9")
                .with_allow_http(true)
                .with_access_key_id("k")
                .with_secret_access_key("s")
                .with_retry(object_store::RetryConfig {
                    max_retries: 0,
                    ..object_store::RetryConfig::default()
                })
                .build()
                .unwrap();
            BlobStore::probe(Arc::new(store), &storage, &dir.path().join("spool"))
                .await
                .err()
                .unwrap()
        };
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("the file store s3://nowhere does not answer: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bytes_round_trip_by_digest() {
        for (name, _dir, store) in stores().await {
            let digest = store.put_bytes(Bytes::from_static(b"hello")).await.unwrap();
            assert_eq!(digest, Digest::of(b"hello"), "{name}");
            assert!(store.exists(&digest).await.unwrap(), "{name}");
            assert_eq!(
                &store.get_bytes(&digest).await.unwrap()[..],
                b"hello",
                "{name}"
            );
            // Storing the same content again changes nothing.
            assert_eq!(
                store.put_bytes(Bytes::from_static(b"hello")).await.unwrap(),
                digest
            );
            assert_eq!(
                store.list().await.unwrap(),
                [format!(
                    "sha256/{}/{}",
                    &digest.to_hex()[..2],
                    digest.to_hex()
                )],
                "{name}"
            );
            let missing = Digest::of(b"nope");
            assert!(!store.exists(&missing).await.unwrap(), "{name}");
            let err = store.get_bytes(&missing).await.unwrap_err();
            assert!(
                matches!(err, Error::NotFound { what: "file", .. }),
                "{name}: {err}"
            );
            let err = store
                .download(&missing, &_dir.path().join("x"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::NotFound { what: "file", .. }),
                "{name}: {err}"
            );
            assert!(!_dir.path().join("x").exists(), "{name}");
        }
    }

    #[tokio::test]
    async fn large_files_upload_in_parts_and_download_intact() {
        let content: Vec<u8> = (0..(MULTIPART_THRESHOLD as usize * 2 + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for (name, dir, store) in stores().await {
            let src = dir.path().join("big.bin");
            std::fs::write(&src, &content).unwrap();
            let (digest, size) = store.put_file(&src).await.unwrap();
            assert_eq!(
                (digest, size),
                (Digest::of(&content), content.len() as u64),
                "{name}"
            );
            let dest = dir.path().join("out/copy.bin");
            store.download(&digest, &dest).await.unwrap();
            assert!(
                std::fs::read(&dest).unwrap() == content,
                "{name}: the copy differs"
            );
            let streamed = collect(store.get_stream(&digest, None).await.unwrap()).await;
            assert!(streamed == content, "{name}: the stream differs");
        }
    }

    #[tokio::test]
    async fn ranges_read_exactly_the_bytes_asked_for() {
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        for (name, _dir, store) in stores().await {
            let digest = store.put_bytes(Bytes::from(content.clone())).await.unwrap();
            for range in [0..1u64, 0..100_000, 99_999..100_000, 12_345..67_890] {
                let got = collect(
                    store
                        .get_stream(&digest, Some(range.clone()))
                        .await
                        .unwrap(),
                )
                .await;
                let want = &content[range.start as usize..range.end as usize];
                assert!(&got[..] == want, "{name}: range {range:?}");
            }
            let err = store
                .get_stream(&Digest::of(b"nope"), Some(0..1))
                .await
                .err()
                .unwrap();
            assert!(matches!(err, Error::NotFound { .. }), "{name}: {err}");
        }
    }

    #[tokio::test]
    async fn artifacts_are_kept_under_their_key() {
        for (name, _dir, store) in stores().await {
            assert_eq!(
                store.get_artifact("engine-1/abc").await.unwrap(),
                None,
                "{name}"
            );
            store
                .put_artifact("engine-1/abc", Bytes::from_static(b"code"))
                .await
                .unwrap();
            assert_eq!(
                store.get_artifact("engine-1/abc").await.unwrap().as_deref(),
                Some(&b"code"[..]),
                "{name}"
            );
            assert_eq!(
                store.list().await.unwrap(),
                ["artifacts/engine-1/abc"],
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn spool_enforces_the_limit_and_stores_nothing() {
        let chunks = || {
            futures::stream::iter(vec![
                Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 600])),
                Ok(Bytes::from(vec![2u8; 600])),
            ])
        };
        for (name, _dir, store) in stores().await {
            let err = store.spool(chunks(), 1000).await.err().unwrap();
            assert!(matches!(err, Error::TooLarge(_)), "{name}: {err}");
            let spooled = store.spool(chunks(), 2000).await.unwrap();
            assert_eq!(spooled.size, 1200);
            assert!(!store.exists(&spooled.digest).await.unwrap(), "{name}");
            assert!(store.list().await.unwrap().is_empty(), "{name}");
            store.put_spooled(&spooled).await.unwrap();
            assert!(store.exists(&spooled.digest).await.unwrap(), "{name}");
        }
    }
}
