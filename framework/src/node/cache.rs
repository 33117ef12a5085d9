//! A node's local cache: files by digest, extracted application images, and
//! compiled components. Everything here can be deleted at any time; the
//! node fetches it again from the service.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;
use crate::error::Error;
use crate::package::{ArchiveLimits, extract};
use crate::protocol::Coordinator;
use crate::runtime::{Role, Runtime};

/// The node's cache folder and what it knows is in it.
pub(super) struct Cache {
    root: PathBuf,
    limits: ArchiveLimits,
    files: Mutex<HashSet<Digest>>,
    apps: Mutex<HashMap<Option<Digest>, PathBuf>>,
    /// Artifacts known to be in the cache, by key.
    artifacts: Mutex<HashSet<String>>,
}

impl Cache {
    pub(super) fn new(root: &Path, limits: ArchiveLimits) -> Result<Self, Error> {
        for dir in ["files", "apps", "artifacts", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Temporary extractions of an earlier run are of no use.
        let tmp = root.join("tmp");
        std::fs::remove_dir_all(&tmp)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            root: root.to_path_buf(),
            limits,
            files: Mutex::new(HashSet::new()),
            apps: Mutex::new(HashMap::new()),
            artifacts: Mutex::new(HashSet::new()),
        })
    }

    /// Where a file with this digest lives once cached.
    pub(super) fn file_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("files").join(&hex[..2]).join(hex)
    }

    /// Makes sure a file is cached; returns its path.
    pub(super) async fn file<C: Coordinator>(
        &self,
        coordinator: &C,
        node_id: &str,
        digest: &Digest,
    ) -> Result<PathBuf, Error> {
        let path = self.file_path(digest);
        if lock(&self.files).contains(digest) {
            return Ok(path);
        }
        if !tokio::fs::try_exists(&path).await? {
            coordinator.fetch_file(node_id, digest, &path).await?;
            // Cached files are shared by hard links with task sandboxes;
            // making them read-only keeps a host bug from changing them.
            let mut perms = tokio::fs::metadata(&path).await?.permissions();
            perms.set_readonly(true);
            tokio::fs::set_permissions(&path, perms).await?;
        }
        lock(&self.files).insert(*digest);
        Ok(path)
    }

    /// Makes sure an application image is extracted; returns its folder (an
    /// empty folder for an application without an image).
    pub(super) async fn app<C: Coordinator>(
        &self,
        coordinator: &C,
        node_id: &str,
        image: Option<Digest>,
    ) -> Result<PathBuf, Error> {
        if let Some(dir) = lock(&self.apps).get(&image) {
            return Ok(dir.clone());
        }
        let name = image.map_or_else(|| "empty".to_owned(), |d| d.to_hex());
        let dir = self.root.join("apps").join(name);
        if !tokio::fs::try_exists(&dir).await? {
            let staging = tempfile::tempdir_in(self.root.join("tmp"))?;
            if let Some(digest) = image {
                let zip = self.file(coordinator, node_id, &digest).await?;
                let target = staging.path().to_path_buf();
                let limits = self.limits.clone();
                tokio::task::spawn_blocking(move || extract(&zip, &target, &limits))
                    .await
                    .map_err(|e| Error::Internal(format!("extraction task failed: {e}")))??;
            }
            // Another worker may have won the race; either copy is complete.
            let staged = staging.keep();
            if let Err(e) = tokio::fs::rename(&staged, &dir).await {
                let _ = tokio::fs::remove_dir_all(&staged).await;
                if !tokio::fs::try_exists(&dir).await? {
                    return Err(e.into());
                }
            }
        }
        lock(&self.apps).insert(image, dir.clone());
        Ok(dir)
    }

    /// Makes sure a component's compiled artifact is in this node's cache
    /// and returns its path: it is the service's own artifact when the
    /// service has one for this node's engine, else compiled here. Compiled
    /// code is kept only in this node's cache: nodes never share machine
    /// code.
    pub(super) async fn artifact<C: Coordinator>(
        &self,
        coordinator: &C,
        node_id: &str,
        runtime: &Runtime,
        role: Role,
        digest: &Digest,
    ) -> Result<PathBuf, Error> {
        let key = runtime.artifact_key(role, digest);
        let local = self.root.join("artifacts").join(&key);
        if lock(&self.artifacts).contains(&key) {
            return Ok(local);
        }
        if tokio::fs::try_exists(&local).await? {
            lock(&self.artifacts).insert(key);
            return Ok(local);
        }
        let bytes = match coordinator.fetch_artifact(node_id, &key).await? {
            Some(bytes) => bytes.to_vec(),
            None => {
                let wasm = tokio::fs::read(self.file(coordinator, node_id, digest).await?).await?;
                let rt = runtime.clone();
                tokio::task::spawn_blocking(move || rt.compile(role, &wasm))
                    .await
                    .map_err(|e| Error::Internal(format!("compile task failed: {e}")))??
            }
        };
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        tokio::fs::write(tmp.path(), &bytes).await?;
        tmp.persist(&local).map_err(|e| Error::Io(e.error))?;
        lock(&self.artifacts).insert(key);
        Ok(local)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
