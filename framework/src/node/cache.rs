//! A node's local cache: files by digest, extracted application images, and
//! compiled components. Everything here can be deleted at any time; the
//! node fetches it again from the service.
//!
//! Fetched files (inputs, images' zips, results of other tasks) are bounded
//! in bytes: past the bound the least recently used are removed, except
//! those an attempt in progress holds ([`FilePin`]). Images and compiled
//! components are one per application version and are kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::error::Error;
use crate::package::{ArchiveLimits, extract};
use crate::protocol::Coordinator;
use crate::runtime::{Role, Runtime};

/// The node's cache folder and what it knows is in it.
pub(super) struct Cache {
    root: PathBuf,
    limits: ArchiveLimits,
    files: Arc<Mutex<Files>>,
    apps: Mutex<HashMap<Option<Digest>, PathBuf>>,
    /// Artifacts known to be in the cache, by key.
    artifacts: Mutex<HashSet<String>>,
}

impl Cache {
    /// The cache in `root`, keeping at most `max_bytes` of fetched files
    /// (and those attempts hold); files an earlier run left are counted.
    pub(super) fn new(root: &Path, limits: ArchiveLimits, max_bytes: u64) -> Result<Self, Error> {
        for dir in ["files", "apps", "artifacts", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Temporary extractions of an earlier run are of no use.
        let tmp = root.join("tmp");
        std::fs::remove_dir_all(&tmp)?;
        std::fs::create_dir_all(&tmp)?;
        let mut files = Files {
            max_bytes,
            ..Files::default()
        };
        for shard in std::fs::read_dir(root.join("files"))? {
            for file in std::fs::read_dir(shard?.path())? {
                let file = file?;
                match file.file_name().to_str().map(str::parse::<Digest>) {
                    Some(Ok(digest)) => files.insert(digest, file.metadata()?.len()),
                    _ => std::fs::remove_file(file.path())?,
                }
            }
        }
        let cache = Self {
            root: root.to_path_buf(),
            limits,
            files: Arc::new(Mutex::new(files)),
            apps: Mutex::new(HashMap::new()),
            artifacts: Mutex::new(HashSet::new()),
        };
        let evicted = lock(&cache.files).evict();
        cache.remove(&evicted);
        Ok(cache)
    }

    fn remove(&self, evicted: &[Digest]) {
        remove_files(&self.root, evicted);
    }

    /// Where a file with this digest lives once cached.
    pub(super) fn file_path(&self, digest: &Digest) -> PathBuf {
        file_path(&self.root, digest)
    }

    /// Makes sure a file is cached; returns its path, and a pin that keeps
    /// it there while held.
    pub(super) async fn file<C: Coordinator>(
        &self,
        coordinator: &C,
        node_id: &str,
        digest: &Digest,
    ) -> Result<(PathBuf, FilePin), Error> {
        let path = self.file_path(digest);
        {
            let mut files = lock(&self.files);
            if files.touch(digest) {
                files.pin(digest);
                return Ok((path, self.pinned(digest)));
            }
        }
        if !tokio::fs::try_exists(&path).await? {
            coordinator.fetch_file(node_id, digest, &path).await?;
            // Cached files are shared by hard links with task sandboxes;
            // making them read-only keeps a host bug from changing them.
            let mut perms = tokio::fs::metadata(&path).await?.permissions();
            perms.set_readonly(true);
            tokio::fs::set_permissions(&path, perms).await?;
        }
        let size = tokio::fs::metadata(&path).await?.len();
        let pin = {
            let mut files = lock(&self.files);
            if !files.touch(digest) {
                files.insert(*digest, size);
            }
            files.pin(digest);
            self.pinned(digest)
        };
        let evicted = lock(&self.files).evict();
        self.remove(&evicted);
        Ok((path, pin))
    }

    /// The pin of a file whose count was just raised.
    fn pinned(&self, digest: &Digest) -> FilePin {
        FilePin {
            files: self.files.clone(),
            root: self.root.clone(),
            digest: *digest,
        }
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
                let (zip, _pin) = self.file(coordinator, node_id, &digest).await?;
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
                let (wasm, _pin) = self.file(coordinator, node_id, digest).await?;
                let wasm = tokio::fs::read(wasm).await?;
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

/// Where a file with this digest lives in the cache at `root`.
fn file_path(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.to_hex();
    root.join("files").join(&hex[..2]).join(hex)
}

fn remove_files(root: &Path, evicted: &[Digest]) {
    for digest in evicted {
        let path = file_path(root, digest);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an evicted file");
        }
    }
}

/// The cached files, their sizes and order of use.
#[derive(Debug, Default)]
struct Files {
    max_bytes: u64,
    bytes: u64,
    entries: HashMap<Digest, Entry>,
    /// Digests by last use (a tick that only grows).
    by_use: BTreeMap<u64, Digest>,
    tick: u64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    used: u64,
    pins: usize,
}

impl Files {
    /// Marks a file as just used; false if it is not cached.
    fn touch(&mut self, digest: &Digest) -> bool {
        let Some(entry) = self.entries.get_mut(digest) else {
            return false;
        };
        self.by_use.remove(&entry.used);
        self.tick += 1;
        entry.used = self.tick;
        self.by_use.insert(self.tick, *digest);
        true
    }

    fn insert(&mut self, digest: Digest, size: u64) {
        self.tick += 1;
        self.entries.insert(
            digest,
            Entry {
                size,
                used: self.tick,
                pins: 0,
            },
        );
        self.by_use.insert(self.tick, digest);
        self.bytes += size;
    }

    fn pin(&mut self, digest: &Digest) {
        if let Some(entry) = self.entries.get_mut(digest) {
            entry.pins += 1;
        }
    }

    fn unpin(&mut self, digest: &Digest) {
        if let Some(entry) = self.entries.get_mut(digest) {
            entry.pins = entry.pins.saturating_sub(1);
        }
    }

    /// Forgets the least recently used unpinned files until the rest fit
    /// the bound; returns them, for removal from disk.
    fn evict(&mut self) -> Vec<Digest> {
        let mut evicted = Vec::new();
        let mut ticks = Vec::new();
        for (&tick, digest) in &self.by_use {
            if self.bytes <= self.max_bytes {
                break;
            }
            let entry = &self.entries[digest];
            if entry.pins == 0 {
                self.bytes -= entry.size;
                ticks.push(tick);
                evicted.push(*digest);
            }
        }
        for tick in ticks {
            if let Some(digest) = self.by_use.remove(&tick) {
                self.entries.remove(&digest);
            }
        }
        evicted
    }
}

/// Keeps a cached file from eviction while held (an attempt that mounts
/// it); dropping the last pin lets the cache evict it again.
#[derive(Debug)]
pub(super) struct FilePin {
    files: Arc<Mutex<Files>>,
    root: PathBuf,
    digest: Digest,
}

impl Drop for FilePin {
    fn drop(&mut self) {
        let evicted = {
            let mut files = lock(&self.files);
            files.unpin(&self.digest);
            files.evict()
        };
        remove_files(&self.root, &evicted);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn the_least_recently_used_unpinned_files_go_first() {
        let mut files = Files {
            max_bytes: 250,
            ..Files::default()
        };
        for n in 0..3 {
            files.insert(digest(n), 100);
        }
        // 300 bytes over a bound of 250: the oldest goes.
        assert_eq!(files.evict(), [digest(0)]);
        assert_eq!(files.bytes, 200);
        // Using a file makes it the newest.
        assert!(files.touch(&digest(1)));
        files.insert(digest(3), 100);
        assert_eq!(files.evict(), [digest(2)]);
        // A pinned file stays, even over the bound.
        files.pin(&digest(1));
        files.pin(&digest(3));
        files.insert(digest(4), 100);
        files.pin(&digest(4));
        assert!(files.evict().is_empty());
        assert_eq!(files.bytes, 300);
        files.unpin(&digest(1));
        assert_eq!(files.evict(), [digest(1)]);
        assert!(!files.touch(&digest(1)), "forgotten");
        assert_eq!(files.bytes, 200);
    }
}
