//! Wake-ups between replicas: PostgreSQL's `LISTEN`/`NOTIFY`, so that a
//! node waiting on one replica hears at once of work queued (or attempts
//! revoked) on another, without polling. On SQLite there is one replica and
//! nothing to send.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::{Dialect, Store};
use crate::error::Error;

/// What a wake-up is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wakeup {
    /// Tasks became queued.
    Work,
    /// Attempts were revoked or nodes asked to leave.
    Revoked,
}

impl Wakeup {
    const ALL: [Self; 2] = [Self::Work, Self::Revoked];

    fn channel(self) -> &'static str {
        match self {
            Self::Work => "tessera_work",
            Self::Revoked => "tessera_revoked",
        }
    }

    fn from_channel(channel: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.channel() == channel)
    }
}

impl Store {
    /// Tells every other replica (`sender` names this one, whose own
    /// listener ignores it).
    pub(crate) async fn send_wakeup(&self, wakeup: Wakeup, sender: &str) -> Result<(), Error> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(wakeup.channel())
                .bind(sender)
                .execute(&self.read)
                .await?;
        }
        Ok(())
    }

    /// Calls `wake` for every wake-up another replica than `me` sends, and
    /// for all of them after the listening connection was lost (some may
    /// have been missed meanwhile). `None` on SQLite.
    pub(crate) fn spawn_wakeup_listener(
        &self,
        me: String,
        wake: impl Fn(Wakeup) + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let url = self.postgres.clone()?;
        Some(tokio::spawn(async move {
            let channels: Vec<&str> = Wakeup::ALL.iter().map(|w| w.channel()).collect();
            let mut listener = loop {
                match connect(&url, &channels).await {
                    Ok(listener) => break listener,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other replicas' wake-ups; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.payload() != me => {
                        if let Some(w) = Wakeup::from_channel(n.channel()) {
                            wake(w);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => Wakeup::ALL.into_iter().for_each(&wake),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other replicas' wake-ups failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }))
    }
}

async fn connect(url: &str, channels: &[&str]) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen_all(channels.iter().copied()).await?;
    Ok(listener)
}
