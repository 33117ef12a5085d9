//! Accounts: who calls the service, their keys, roles and quotas.
//!
//! Every request is signed with one of its account's two keys (see
//! [`crate::auth`]). The first start of a service creates the admin account
//! [`ADMIN_ACCOUNT`] and writes its credentials to
//! [`ADMIN_CREDENTIALS_FILE`] in the data folder (mode 0600). The admin
//! manages accounts; every account (the admin's too) publishes its own
//! applications and submits its own jobs, and sees nothing of the others'.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{self, AuthError};
use crate::error::Error;
use crate::service::Service;
use crate::store::Tx;

/// The account the first start creates.
pub const ADMIN_ACCOUNT: &str = "admin";
/// The file in the data folder holding the admin's credentials, as
/// `TESSERA_ACCOUNT=…` and `TESSERA_KEY=…` lines.
pub const ADMIN_CREDENTIALS_FILE: &str = "admin-credentials.env";

/// An account, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Its name.
    pub name: String,
    /// Whether it manages accounts.
    pub admin: bool,
    /// Its limits.
    pub quotas: Quotas,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An account's limits; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Tasks of the account's jobs running (or leased to a node) at once.
    #[serde(default)]
    pub max_running_tasks: Option<u64>,
    /// Bytes of uploaded files the account keeps.
    #[serde(default)]
    pub max_stored_bytes: Option<u64>,
    /// Jobs of the account not yet finished.
    #[serde(default)]
    pub max_pending_jobs: Option<u64>,
}

/// An account's two keys (base64).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountKeys {
    /// The account.
    pub account: String,
    /// The primary key.
    pub primary: String,
    /// The secondary key.
    pub secondary: String,
}

impl std::fmt::Debug for AccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKeys")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A request to create an account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Its name.
    pub name: String,
    /// Its limits.
    #[serde(default)]
    pub quotas: Quotas,
}

/// Which of an account's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyName {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

/// Who is calling: the account a request was signed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub account: String,
    /// Whether it is an admin.
    pub admin: bool,
}

/// Names of accounts and pools: 1 to 64 characters from `a-z 0-9 - _`,
/// starting with a letter.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{}` is not a valid {what} name: use 1 to 64 characters from a-z 0-9 - _, starting with a letter",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// The path of the admin credentials file in `data_dir`.
pub fn admin_credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_CREDENTIALS_FILE)
}

/// Reads a credentials file (`TESSERA_ACCOUNT=…`, `TESSERA_KEY=…` lines):
/// the account and its key.
pub fn read_credentials(path: &Path) -> std::io::Result<(String, String)> {
    let text = std::fs::read_to_string(path)?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} has no {name}= line", path.display()),
                )
            })
    };
    Ok((value("TESSERA_ACCOUNT")?, value("TESSERA_KEY")?))
}

fn write_credentials(path: &Path, account: &str, key: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "TESSERA_ACCOUNT={account}\nTESSERA_KEY={key}")?;
    file.sync_all()
}

fn new_keys(account: &str) -> AccountKeys {
    AccountKeys {
        account: account.to_owned(),
        primary: auth::generate_key(),
        secondary: auth::generate_key(),
    }
}

impl Service {
    /// Creates the admin account and its credentials file if the service
    /// has no admin yet; returns the file's path.
    pub(crate) async fn ensure_admin(&self) -> Result<PathBuf, Error> {
        let path = admin_credentials_path(&self.config().data_dir);
        let store = &self.inner.store;
        if !store.has_admin().await? {
            let keys = new_keys(ADMIN_ACCOUNT);
            let info = AccountInfo {
                name: ADMIN_ACCOUNT.into(),
                admin: true,
                quotas: Quotas::default(),
                created_at: Utc::now(),
            };
            // A leftover file from an earlier, lost state would hold a
            // stale key.
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            write_credentials(&path, ADMIN_ACCOUNT, &keys.primary)?;
            if !store.insert_account(&info, &keys).await? {
                // Another replica sharing the database made it first: the
                // key just written is not the admin's.
                std::fs::remove_file(&path)?;
            }
        }
        Ok(path)
    }

    /// The caller a request signed for `account` comes from, if `signature`
    /// (base64) signs `canonical` with one of the account's keys.
    pub async fn authenticate(
        &self,
        account: &str,
        canonical: &str,
        signature: &str,
    ) -> Result<Caller, Error> {
        let Some((info, keys)) = self.inner.store.account(account).await? else {
            return Err(AuthError::BadSignature.into());
        };
        let matches = [&keys.primary, &keys.secondary].into_iter().any(|key| {
            auth::decode_key(key).is_ok_and(|key| auth::verify(&key, canonical, signature))
        });
        if !matches {
            return Err(AuthError::BadSignature.into());
        }
        Ok(Caller {
            account: info.name,
            admin: info.admin,
        })
    }

    pub(crate) fn require_admin(caller: &Caller, what: &str) -> Result<(), Error> {
        if caller.admin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "only an admin account may {what}; `{}` is not one",
                caller.account
            )))
        }
    }

    /// The account `name` if the caller may manage it (itself, or any
    /// account for an admin); others are not found.
    async fn managed_account(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(AccountInfo, AccountKeys), Error> {
        if !caller.admin && caller.account != name {
            return Err(Error::not_found("account", name));
        }
        self.inner
            .store
            .account(name)
            .await?
            .ok_or_else(|| Error::not_found("account", name))
    }

    /// Creates an account (admins only); returns its keys.
    pub async fn create_account(
        &self,
        caller: &Caller,
        request: NewAccount,
    ) -> Result<AccountKeys, Error> {
        Self::require_admin(caller, "create accounts")?;
        check_name("account", &request.name)?;
        let keys = new_keys(&request.name);
        let info = AccountInfo {
            name: request.name.clone(),
            admin: false,
            quotas: request.quotas,
            created_at: Utc::now(),
        };
        if !self.inner.store.insert_account(&info, &keys).await? {
            return Err(Error::Conflict(format!(
                "the account `{}` already exists",
                request.name
            )));
        }
        tracing::info!(account = %request.name, by = %caller.account, "account created");
        Ok(keys)
    }

    /// The accounts the caller sees: all of them for an admin, else its own.
    pub async fn list_accounts(&self, caller: &Caller) -> Result<Vec<AccountInfo>, Error> {
        let mut all = self.inner.store.accounts().await?;
        if !caller.admin {
            all.retain(|a| a.name == caller.account);
        }
        Ok(all)
    }

    /// An account's keys, for itself or an admin.
    pub async fn account_keys(&self, caller: &Caller, name: &str) -> Result<AccountKeys, Error> {
        Ok(self.managed_account(caller, name).await?.1)
    }

    /// Replaces one of an account's keys (for itself or an admin); returns
    /// both keys. Requests signed with the other key keep working.
    pub async fn regenerate_key(
        &self,
        caller: &Caller,
        name: &str,
        which: KeyName,
    ) -> Result<AccountKeys, Error> {
        let (_, mut keys) = self.managed_account(caller, name).await?;
        let key = auth::generate_key();
        self.inner.store.set_key(name, which, &key).await?;
        match which {
            KeyName::Primary => keys.primary = key,
            KeyName::Secondary => keys.secondary = key,
        }
        tracing::info!(account = %name, key = ?which, by = %caller.account, "key regenerated");
        Ok(keys)
    }

    /// Sets an account's quotas (admins only).
    pub async fn set_quotas(
        &self,
        caller: &Caller,
        name: &str,
        quotas: Quotas,
    ) -> Result<AccountInfo, Error> {
        Self::require_admin(caller, "change quotas")?;
        let (mut info, _) = self.managed_account(caller, name).await?;
        self.inner.store.set_quotas(name, &quotas).await?;
        info.quotas = quotas;
        Ok(info)
    }

    /// The account's quotas (none for an unknown account).
    pub(crate) async fn quotas(&self, account: &str) -> Result<Quotas, Error> {
        Ok(self
            .inner
            .store
            .account(account)
            .await?
            .map(|(info, _)| info.quotas)
            .unwrap_or_default())
    }

    /// Refuses a new job when the account has its maximum of unfinished
    /// jobs; decided inside `tx`, which is to add the job.
    pub(crate) async fn check_pending_jobs_quota(tx: &mut Tx, account: &str) -> Result<(), Error> {
        if let Some((max, pending)) = tx.pending_jobs(account).await?
            && pending >= max
        {
            return Err(Error::QuotaExceeded(format!(
                "account `{account}` has {pending} unfinished jobs, its quota max_pending_jobs is {max}: wait for one to finish or cancel one"
            )));
        }
        Ok(())
    }

    /// Refuses to store `size` more bytes for the account beyond its
    /// maximum.
    pub(crate) async fn check_stored_bytes_quota(
        &self,
        account: &str,
        size: u64,
    ) -> Result<(), Error> {
        if let Some(max) = self.quotas(account).await?.max_stored_bytes {
            let stored = self.inner.store.stored_bytes(account).await?;
            if stored.saturating_add(size) > max {
                return Err(Error::QuotaExceeded(format!(
                    "account `{account}` stores {stored} bytes; {size} more would exceed its quota max_stored_bytes of {max}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_checked() {
        for good in ["a", "alice", "team-7_x"] {
            assert!(check_name("account", good).is_ok(), "{good}");
        }
        for bad in ["", "7team", "Alice", "a b", "a/b", &"a".repeat(65)] {
            let err = check_name("account", bad).unwrap_err();
            assert!(
                err.to_string().contains("is not a valid account name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_files_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = admin_credentials_path(dir.path());
        write_credentials(&path, "admin", "a2V5").unwrap();
        assert_eq!(
            read_credentials(&path).unwrap(),
            ("admin".to_string(), "a2V5".to_string())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten in place.
        assert!(write_credentials(&path, "admin", "b3RoZXI=").is_err());
        std::fs::write(&path, "TESSERA_ACCOUNT=x\n").unwrap();
        let err = read_credentials(&path).unwrap_err();
        assert!(err.to_string().contains("has no TESSERA_KEY= line"));
    }

    #[test]
    fn keys_are_not_printed_in_debug_output() {
        let keys = new_keys("alice");
        let shown = format!("{keys:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains(&keys.primary) && !shown.contains(&keys.secondary));
    }
}
