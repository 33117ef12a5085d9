//! Publishing applications and reading them back.
//!
//! Publishing is all-or-nothing: both zips and both components are checked
//! (safe archive, valid manifest, each component compiles and implements
//! its world) before anything is stored, so a refused publish leaves no
//! trace. Then the zips, components and precompiled artifacts are stored by
//! content and a new immutable version is recorded.

use bytes::Bytes;

use crate::blobs::Spooled;
use crate::digest::Digest;
use crate::error::Error;
use crate::model::{AppSummary, AppVersion};
use crate::package;
use crate::runtime::Role;
use crate::service::Service;

/// Application names: 1 to 64 characters from `a-z 0-9 - _ .`, starting
/// with a letter or digit.
pub fn check_app_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{}` is not a valid application name: use 1 to 64 characters from a-z 0-9 - _ ., starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        )))
    }
}

impl Service {
    /// Publishes a new version of application `name` from an uploaded cloud
    /// assembly and optional application image.
    pub async fn publish(
        &self,
        account: &str,
        name: &str,
        image: Option<&Spooled>,
        assembly: &Spooled,
    ) -> Result<AppVersion, Error> {
        check_app_name(name)?;
        let limits = self.inner.config.archive_limits.clone();
        if let Some(image) = image {
            let path = image.path().to_path_buf();
            let limits = limits.clone();
            blocking(move || package::verify(&path, &limits).map_err(Error::Image)).await??;
        }
        let path = assembly.path().to_path_buf();
        let parsed = blocking(move || package::read_assembly(&path, &limits)).await??;
        let runtime = self.inner.runtime.clone();
        let (splitter, processor) = (parsed.splitter, parsed.processor);
        let (splitter, processor, splitter_artifact, processor_artifact) = blocking(move || {
            let s = runtime.compile(Role::Splitter, &splitter)?;
            let p = runtime.compile(Role::Processor, &processor)?;
            Ok::<_, Error>((splitter, processor, s, p))
        })
        .await??;
        let parameters = serde_json::to_string(&parsed.manifest.parameters)
            .map_err(|e| Error::Internal(format!("serialising parameters: {e}")))?;

        // Everything is valid: store it.
        let blobs = &self.inner.blobs;
        if let Some(image) = image {
            blobs.put_spooled(image).await?;
        }
        blobs.put_spooled(assembly).await?;
        let splitter_digest = blobs.put_bytes(Bytes::from(splitter)).await?;
        let processor_digest = blobs.put_bytes(Bytes::from(processor)).await?;
        let runtime = &self.inner.runtime;
        blobs
            .put_artifact(
                &runtime.artifact_key(Role::Splitter, &splitter_digest),
                Bytes::from(splitter_artifact),
            )
            .await?;
        blobs
            .put_artifact(
                &runtime.artifact_key(Role::Processor, &processor_digest),
                Bytes::from(processor_artifact),
            )
            .await?;
        let mut tx = self.inner.store.begin().await?;
        let version = tx
            .insert_app_version(
                account,
                name,
                image.map(|i| (i.digest, i.size)),
                (assembly.digest, assembly.size),
                &splitter_digest,
                &processor_digest,
                &parameters,
            )
            .await?;
        tx.commit().await?;
        tracing::info!(%account, app = name, version, "published an application");
        self.app_version(account, name, Some(version)).await
    }

    /// The account's applications.
    pub async fn list_apps(&self, account: &str) -> Result<Vec<AppSummary>, Error> {
        self.inner.store.list_apps(account).await
    }

    /// Every version of an application, newest first.
    pub async fn app_versions(&self, account: &str, name: &str) -> Result<Vec<AppVersion>, Error> {
        let versions = self.inner.store.app_versions(account, name).await?;
        if versions.is_empty() {
            return Err(Error::not_found("application", name));
        }
        Ok(versions)
    }

    /// One version of an application (the newest when `version` is `None`).
    pub async fn app_version(
        &self,
        account: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<AppVersion, Error> {
        match self.inner.store.app_version(account, name, version).await? {
            Some(v) => Ok(v),
            None => match version {
                Some(v)
                    if self
                        .inner
                        .store
                        .app_version(account, name, None)
                        .await?
                        .is_some() =>
                {
                    Err(Error::not_found(
                        "application version",
                        format!("{name}@{v}"),
                    ))
                }
                _ => Err(Error::not_found("application", name)),
            },
        }
    }

    /// Whether the account has a file with this digest (and its size).
    pub async fn file_size(&self, account: &str, digest: &Digest) -> Result<Option<u64>, Error> {
        self.inner.store.file_size(account, digest).await
    }

    /// Which of these digests the account has not uploaded.
    pub async fn missing_files(
        &self,
        account: &str,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, Error> {
        self.inner.store.missing_files(account, digests).await
    }

    /// Publishes a new version of application `name` from files the
    /// account has uploaded (`PUT /v1/files/{sha256}`): the cloud assembly
    /// and optionally the application image, named by their sha256. Each is
    /// copied from the file store to a local spool for checking, so large
    /// images never pass through a request body twice.
    pub async fn publish_uploaded(
        &self,
        account: &str,
        name: &str,
        assembly: &Digest,
        image: Option<&Digest>,
    ) -> Result<AppVersion, Error> {
        check_app_name(name)?;
        let spool = |what: &'static str, digest: Digest| async move {
            self.uploaded_size(account, &digest, what).await?;
            let blobs = &self.inner.blobs;
            blobs
                .spool(blobs.get_stream(&digest, None).await?, u64::MAX)
                .await
        };
        let assembly = spool("the cloud assembly", *assembly).await?;
        let image = match image {
            Some(digest) => Some(spool("the application image", *digest).await?),
            None => None,
        };
        self.publish(account, name, image.as_ref(), &assembly).await
    }

    /// The size of a file the account uploaded; an error naming `what` the
    /// file is for, its digest and how to upload it if the account has no
    /// such file.
    pub(crate) async fn uploaded_size(
        &self,
        account: &str,
        digest: &Digest,
        what: impl std::fmt::Display,
    ) -> Result<u64, Error> {
        self.inner
            .store
            .file_size(account, digest)
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what}: no uploaded file has sha256 {digest}; upload it first (PUT /v1/files/{digest})"
                ))
            })
    }

    /// Stores an uploaded file for the account. When the client named the
    /// digest it expects, a mismatch refuses the upload and stores nothing.
    /// Returns whether the account did not have the file before.
    pub async fn store_upload(
        &self,
        account: &str,
        expected: Option<&Digest>,
        upload: &Spooled,
    ) -> Result<bool, Error> {
        if let Some(expected) = expected
            && *expected != upload.digest
        {
            return Err(Error::Invalid(format!(
                "the uploaded content has sha256 {}, not {expected}: the upload was damaged or the wrong file was sent",
                upload.digest
            )));
        }
        let existed = self
            .inner
            .store
            .file_size(account, &upload.digest)
            .await?
            .is_some();
        if !existed {
            self.check_stored_bytes_quota(account, upload.size).await?;
        }
        self.inner.blobs.put_spooled(upload).await?;
        let mut tx = self.inner.store.begin().await?;
        tx.record_file(account, &upload.digest, upload.size).await?;
        tx.commit().await?;
        Ok(!existed)
    }
}

/// Runs blocking work (archive checks, compilation) off the reactor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a background task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_the_rules() {
        for good in ["montecarlo", "a", "render-2", "k.mer_v1", "9lives"] {
            check_app_name(good).unwrap();
        }
        for bad in ["", "Montecarlo", "-x", ".x", "a/b", "a b", &"a".repeat(65)] {
            let err = check_app_name(bad).unwrap_err();
            assert!(
                err.to_string().contains("not a valid application name"),
                "{err}"
            );
        }
    }
}
