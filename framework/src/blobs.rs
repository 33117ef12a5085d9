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
//! default), Azure Blob Storage and S3 are interchangeable; nothing here
//! assumes a blob is a local path.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
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

    /// The whole content of a blob.
    pub async fn get_bytes(&self, digest: &Digest) -> Result<Bytes, Error> {
        match self.store.get(&Self::key(digest)).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found("file", digest.to_hex()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A blob's content as a stream of chunks.
    pub async fn get_stream(
        &self,
        digest: &Digest,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static, Error> {
        match self.store.get(&Self::key(digest)).await {
            Ok(r) => Ok(r.into_stream().map_err(Error::from)),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found("file", digest.to_hex()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Copies a blob to a local file, atomically (a temporary file renamed
    /// into place), checking its digest on the way.
    pub async fn download(&self, digest: &Digest, dest: &Path) -> Result<(), Error> {
        let dir = dest
            .parent()
            .ok_or_else(|| Error::Internal(format!("{} has no parent", dest.display())))?;
        tokio::fs::create_dir_all(dir).await?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        let mut out = std::io::BufWriter::new(HashingWriter::new(tmp.reopen()?));
        let mut stream = std::pin::pin!(self.get_stream(digest).await?);
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
        }
        let (got, _) = out
            .into_inner()
            .map_err(|e| Error::Io(e.into_error()))?
            .finish();
        if got != *digest {
            return Err(Error::Internal(format!(
                "stored file {digest} has digest {got}: the file store is corrupt"
            )));
        }
        tmp.persist(dest).map_err(|e| Error::Io(e.error))?;
        Ok(())
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

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(&dir.path().join("blobs"), &dir.path().join("spool")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn bytes_round_trip_by_digest() {
        let (_dir, store) = store();
        let digest = store.put_bytes(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(digest, Digest::of(b"hello"));
        assert!(store.exists(&digest).await.unwrap());
        assert_eq!(&store.get_bytes(&digest).await.unwrap()[..], b"hello");
        let missing = Digest::of(b"nope");
        assert!(!store.exists(&missing).await.unwrap());
        let err = store.get_bytes(&missing).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { what: "file", .. }), "{err}");
    }

    #[tokio::test]
    async fn large_files_upload_in_parts_and_download_intact() {
        let (dir, store) = store();
        let src = dir.path().join("big.bin");
        let content: Vec<u8> = (0..(MULTIPART_THRESHOLD as usize + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&src, &content).unwrap();
        let (digest, size) = store.put_file(&src).await.unwrap();
        assert_eq!((digest, size), (Digest::of(&content), content.len() as u64));
        let dest = dir.path().join("out/copy.bin");
        store.download(&digest, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), content);
    }

    #[tokio::test]
    async fn spool_enforces_the_limit_and_stores_nothing() {
        let (_dir, store) = store();
        let chunks = || {
            futures::stream::iter(vec![
                Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 600])),
                Ok(Bytes::from(vec![2u8; 600])),
            ])
        };
        let err = store.spool(chunks(), 1000).await.err().unwrap();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
        let spooled = store.spool(chunks(), 2000).await.unwrap();
        assert_eq!(spooled.size, 1200);
        assert!(!store.exists(&spooled.digest).await.unwrap());
        store.put_spooled(&spooled).await.unwrap();
        assert!(store.exists(&spooled.digest).await.unwrap());
    }
}
