//! Work on a pool's files, kept off the daemon's async workers.
//!
//! A pool sits on a disk or a mount that can hang (a failing disk, a dead
//! NFS server): a call into it then does not return. So a request's work on
//! pool files runs on a blocking thread within [`POOL_IO_LIMIT`]
//! ([`Inner::on_pool`], [`Inner::pool_io`]): a pool that does not answer in
//! time fails the request with 503, and the async workers (the API, the
//! heartbeat, the cluster's calls) keep serving. A pool the health checks
//! have found hung is refused at once, before any thread is spent on it
//! ([`Inner::pool`]).

use crate::errors;
use crate::model::PoolRecord;
use crate::Inner;
use nasvisor_api_types::CoreError;
use nasvisor_storage::Pool;
use std::path::Path;
use std::time::Duration;

/// How long one request's work on a pool may take.
pub(crate) const POOL_IO_LIMIT: Duration = Duration::from_secs(20);

impl Inner {
    /// Pool `name`'s record on this host, unless the health checks found
    /// it hung (503). No I/O. `field` names the request's field on error.
    fn usable_pool(&self, name: &str, field: &str) -> Result<PoolRecord, CoreError> {
        let rec: PoolRecord = self.pool_record(name).ok_or_else(|| {
            errors::invalid(field, format!("no pool {name:?} on host {}", self.host.id))
        })?;
        if self.hung_pool().as_deref() == Some(name) {
            return Err(CoreError::Unavailable {
                reason: format!(
                    "pool {name} on host {} does not answer (a hung disk or mount?): its \
                     health check has not returned; try again once it does",
                    self.host.id
                ),
            });
        }
        Ok(rec)
    }

    /// Pool `name`, opened on the calling thread: for code that already
    /// runs on a blocking thread (a job's steps). Async code uses
    /// [`Inner::on_pool`].
    pub(crate) fn pool(&self, name: &str, field: &str) -> Result<Pool, CoreError> {
        let rec = self.usable_pool(name, field)?;
        Pool::open(&rec.name, Path::new(&rec.path)).map_err(|e| errors::storage(field, e))
    }

    /// Opens pool `name` and runs `f` on it, on a blocking thread within
    /// [`POOL_IO_LIMIT`] ([`Inner::pool_io`]).
    pub(crate) async fn on_pool<T: Send + 'static>(
        &self,
        name: &str,
        field: &str,
        f: impl FnOnce(&Pool) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        self.run_on_pool(name, field, true, f).await
    }

    /// As [`Inner::on_pool`], for work whose length grows with the data
    /// (a full copy of a volume): on a blocking thread, without the time
    /// limit. A hung pool holds that thread and this request only.
    pub(crate) async fn on_pool_unbounded<T: Send + 'static>(
        &self,
        name: &str,
        field: &str,
        f: impl FnOnce(&Pool) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        self.run_on_pool(name, field, false, f).await
    }

    /// Opens pool `name` (checked usable here) and runs `f` on it on a
    /// blocking thread, within [`POOL_IO_LIMIT`] when `bounded`.
    async fn run_on_pool<T: Send + 'static>(
        &self,
        name: &str,
        field: &str,
        bounded: bool,
        f: impl FnOnce(&Pool) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        let rec = self.usable_pool(name, field)?;
        let field = field.to_string();
        let work = move || {
            let p = Pool::open(&rec.name, Path::new(&rec.path))
                .map_err(|e| errors::storage(&field, e))?;
            f(&p)
        };
        let what = format!("pool {name}");
        if bounded {
            self.pool_io(&what, work).await
        } else {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| errors::internal(format!("{what}: {e}")))?
        }
    }

    /// Deletes volume `vol` of pool `pool` (off the async workers); a
    /// failure is logged as `what` and otherwise left.
    pub(crate) async fn delete_volume_or_warn(&self, pool: &str, vol: &str, what: &str) {
        let v = vol.to_string();
        let r = self
            .on_pool(pool, "volume", move |p| {
                p.delete(&v).map_err(|e| errors::storage("volume", e))
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(pool, volume = vol, error = %e, "cannot {what}");
        }
    }

    /// Runs `f`, work on pool files for `what`, on a blocking thread
    /// within [`POOL_IO_LIMIT`]. A pool that does not answer in time fails
    /// the request (503); the thread is left to its call.
    pub(crate) async fn pool_io<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        match tokio::time::timeout(POOL_IO_LIMIT, tokio::task::spawn_blocking(f)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(errors::internal(format!("{what}: {e}"))),
            Err(_) => {
                tracing::warn!(what, "a pool did not answer");
                Err(CoreError::Unavailable {
                    reason: format!(
                        "{what} on host {}: the pool did not answer within {} s (a hung disk or mount?)",
                        self.host.id,
                        POOL_IO_LIMIT.as_secs()
                    ),
                })
            }
        }
    }
}
