//! Accounts: their keys, role and quotas.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, Tx};
use crate::accounts::{AccountInfo, AccountKeys, KeyName, Quotas};
use crate::error::Error;
use crate::model::time_from_ms;

const COLUMNS: &str = "name, admin, primary_key, secondary_key, max_running_tasks, \
     max_stored_bytes, max_pending_jobs, created_at";

fn quota(row: &AnyRow, column: &str) -> Result<Option<u64>, Error> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(|v| v as u64))
}

fn from_row(row: &AnyRow) -> Result<(AccountInfo, AccountKeys), Error> {
    let name: String = row.try_get("name")?;
    let info = AccountInfo {
        name: name.clone(),
        admin: row.try_get::<i64, _>("admin")? != 0,
        quotas: Quotas {
            max_running_tasks: quota(row, "max_running_tasks")?,
            max_stored_bytes: quota(row, "max_stored_bytes")?,
            max_pending_jobs: quota(row, "max_pending_jobs")?,
        },
        created_at: time_from_ms(row.try_get("created_at")?),
    };
    let keys = AccountKeys {
        account: name,
        primary: row.try_get("primary_key")?,
        secondary: row.try_get("secondary_key")?,
    };
    Ok((info, keys))
}

fn opt(v: Option<u64>) -> Option<i64> {
    v.map(|v| v.min(i64::MAX as u64) as i64)
}

impl Store {
    /// An account and its keys.
    pub(crate) async fn account(
        &self,
        name: &str,
    ) -> Result<Option<(AccountInfo, AccountKeys)>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every account, by name.
    pub(crate) async fn accounts(&self) -> Result<Vec<AccountInfo>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM accounts ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(from_row(r)?.0)).collect()
    }

    /// Whether an admin account exists.
    pub(crate) async fn has_admin(&self) -> Result<bool, Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM accounts WHERE admin = 1")
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Creates an account; `false` if the name is taken.
    pub(crate) async fn insert_account(
        &self,
        info: &AccountInfo,
        keys: &AccountKeys,
    ) -> Result<bool, Error> {
        let sql = format!(
            "INSERT INTO accounts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (name) DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(&info.name)
            .bind(i64::from(info.admin))
            .bind(&keys.primary)
            .bind(&keys.secondary)
            .bind(opt(info.quotas.max_running_tasks))
            .bind(opt(info.quotas.max_stored_bytes))
            .bind(opt(info.quotas.max_pending_jobs))
            .bind(info.created_at.timestamp_millis())
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces one of an account's keys.
    pub(crate) async fn set_key(&self, name: &str, which: KeyName, key: &str) -> Result<(), Error> {
        let sql = match which {
            KeyName::Primary => "UPDATE accounts SET primary_key = $1 WHERE name = $2",
            KeyName::Secondary => "UPDATE accounts SET secondary_key = $1 WHERE name = $2",
        };
        sqlx::query(sql)
            .bind(key)
            .bind(name)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Sets an account's quotas.
    pub(crate) async fn set_quotas(&self, name: &str, quotas: &Quotas) -> Result<(), Error> {
        sqlx::query(
            "UPDATE accounts SET max_running_tasks = $1, max_stored_bytes = $2, \
             max_pending_jobs = $3 WHERE name = $4",
        )
        .bind(opt(quotas.max_running_tasks))
        .bind(opt(quotas.max_stored_bytes))
        .bind(opt(quotas.max_pending_jobs))
        .bind(name)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The bytes an account stores: its uploaded files.
    pub(crate) async fn stored_bytes(&self, account: &str) -> Result<u64, Error> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS n FROM files WHERE account = $1",
        )
        .bind(account)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }
}

impl Tx {
    /// The account's `max_pending_jobs` quota and, when it has one, how
    /// many of its jobs have not finished. The account's row stays locked
    /// until the transaction ends, so that two submissions cannot both
    /// take the last place.
    pub(crate) async fn pending_jobs(
        &mut self,
        account: &str,
    ) -> Result<Option<(u64, u64)>, Error> {
        let row = sqlx::query(&format!(
            "SELECT max_pending_jobs FROM accounts WHERE name = $1{}",
            self.dialect.for_update()
        ))
        .bind(account)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(max) = row
            .map(|r| quota(&r, "max_pending_jobs"))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE account = $1 AND finished_at IS NULL",
        )
        .bind(account)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(Some((max, row.try_get::<i64, _>("n")? as u64)))
    }
}
