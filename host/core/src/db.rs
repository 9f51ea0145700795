//! Typed access to the cluster store: every change of desired state is a
//! write through the raft log.

use crate::errors;
use nasvisor_api_types::CoreError;
use nasvisor_cluster::{ClusterStore, Revision, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The cluster store, with typed records. The store is swapped once when a
/// single host joins a cluster ([`Db::swap`]).
pub struct Db {
    store: std::sync::RwLock<Arc<ClusterStore>>,
    /// Typed lists read by [`Db::list_shared`]: per kind and type, the
    /// store (its address) and the revision they were read at.
    lists: Mutex<HashMap<(String, TypeId), SharedList>>,
}

type SharedList = (usize, Revision, Arc<dyn Any + Send + Sync>);

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("store", &self.store).finish()
    }
}

/// How often a compare-and-swap update is retried when it races another.
const CAS_ATTEMPTS: usize = 8;

impl Db {
    pub fn new(store: ClusterStore) -> Db {
        Db {
            store: std::sync::RwLock::new(Arc::new(store)),
            lists: Mutex::default(),
        }
    }

    /// The current store.
    pub fn store(&self) -> Arc<ClusterStore> {
        self.store.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the store; returns the previous one.
    pub fn swap(&self, store: ClusterStore) -> Arc<ClusterStore> {
        crate::lock(&self.lists).clear();
        std::mem::replace(
            &mut *self.store.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(store),
        )
    }

    /// The store, when nothing else holds it.
    pub fn into_store(self) -> Option<ClusterStore> {
        Arc::into_inner(self.store.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// How long the store's oldest write in progress has been running.
    pub fn oldest_write(&self) -> Option<std::time::Duration> {
        self.store().oldest_write()
    }

    /// One record and its revision.
    pub fn get<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Option<(T, Revision)> {
        self.store()
            .get_with(kind, key, |v, rev| {
                read_record(kind, key, v).map(|t| (t, rev))
            })
            .flatten()
    }

    /// Every record of `kind`, in key order.
    pub fn list<T: DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.store()
            .list_with(kind, |key, v, _| read_record(kind, key, v))
    }

    /// Every record of `kind`, in key order, shared: read and decoded once
    /// per revision of the store, however many callers ask (the API's
    /// lists, the host views, placement). A write anywhere in the store
    /// makes the next call read again.
    pub fn list_shared<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        kind: &str,
    ) -> Arc<Vec<T>> {
        let store = self.store();
        let at = Arc::as_ptr(&store) as usize;
        let key = (kind.to_string(), TypeId::of::<T>());
        let now = store.revision();
        let hit = crate::lock(&self.lists)
            .get(&key)
            .filter(|(s, rev, _)| *s == at && *rev == now)
            .map(|(_, _, list)| list.clone());
        if let Some(list) = hit.and_then(|l| l.downcast::<Vec<T>>().ok()) {
            return list;
        }
        let (rev, list) = store.list_with_revision(kind, |key, v, _| read_record(kind, key, v));
        let list = Arc::new(list);
        crate::lock(&self.lists).insert(key, (at, rev, list.clone()));
        list
    }

    /// Writes a record; with `expected`, only if it is still at that
    /// revision (`Some(0)`: only if it does not exist).
    pub async fn put<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
        expected: Option<Revision>,
    ) -> Result<Revision, CoreError> {
        let v = serde_json::to_value(value).map_err(errors::internal)?;
        let rev = self
            .store()
            .put(kind, key, v, expected)
            .await
            .map_err(errors::store)?;
        self.applied(rev).await;
        Ok(rev)
    }

    /// Waits until this host applied revision `rev` (a write forwarded to
    /// the leader is committed there first): a host reads its own writes.
    pub(crate) async fn applied(&self, rev: Revision) {
        let store = self.store();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.revision() < rev && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Creates a record that must not exist yet; `what` names it in the
    /// conflict error.
    pub async fn create<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
        what: &str,
    ) -> Result<Revision, CoreError> {
        let v = serde_json::to_value(value).map_err(errors::internal)?;
        match self.store().put(kind, key, v, Some(0)).await {
            Ok(r) => {
                self.applied(r).await;
                Ok(r)
            }
            Err(StoreError::Conflict { .. }) => {
                Err(errors::conflict(format!("{what} already exists")))
            }
            Err(e) => Err(errors::store(e)),
        }
    }

    pub async fn delete(&self, kind: &str, key: &str) -> Result<(), CoreError> {
        match self.store().delete(kind, key, None).await {
            Ok(r) => {
                self.applied(r).await;
                Ok(())
            }
            Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(errors::store(e)),
        }
    }

    /// Read-modify-write of one record, retried when another writer got in
    /// between. `f` may refuse the change. Returns the record as written.
    pub async fn update<T, F>(&self, kind: &str, key: &str, f: F) -> Result<T, CoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> Result<(), CoreError>,
    {
        self.update_as(None, kind, key, f).await
    }

    /// [`Self::update`], or with `term` for a decision this host took as
    /// the leader of that term from what it saw while leading (a host
    /// silent long enough to fence, say): then the change is made only if
    /// this host still leads in that term when it is committed, and is
    /// never forwarded; a deposed leader's decision fails (unavailable)
    /// and changes nothing.
    pub async fn update_as<T, F>(
        &self,
        term: Option<u64>,
        kind: &str,
        key: &str,
        mut f: F,
    ) -> Result<T, CoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> Result<(), CoreError>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut rec, rev)) = self.get::<T>(kind, key) else {
                return Err(errors::not_found(format!("{kind} {key}")));
            };
            f(&mut rec)?;
            let v = serde_json::to_value(&rec).map_err(errors::internal)?;
            let written = match term {
                Some(t) => self.store().put_in_term(t, kind, key, v, Some(rev)).await,
                None => self.store().put(kind, key, v, Some(rev)).await,
            };
            match written {
                Ok(r) => {
                    self.applied(r).await;
                    return Ok(rec);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(errors::store(e)),
            }
        }
        Err(errors::conflict(format!(
            "{kind} {key} keeps changing; try again"
        )))
    }
}

/// A stored record read in place (no copy of its JSON); an unreadable one
/// is logged and left out.
fn read_record<T: DeserializeOwned>(kind: &str, key: &str, v: &serde_json::Value) -> Option<T> {
    match T::deserialize(v) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(kind, key, error = %e, "unreadable record in the cluster store");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        n: u32,
    }

    #[tokio::test]
    async fn a_shared_list_is_read_once_per_revision_and_again_after_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClusterStore::open(dir.path(), 1, "127.0.0.1:1")
            .await
            .unwrap();
        let db = Db::new(store);
        db.put("rec", "a", &Rec { n: 1 }, None).await.unwrap();
        let first = db.list_shared::<Rec>("rec");
        assert_eq!(*first, [Rec { n: 1 }]);
        assert!(
            Arc::ptr_eq(&first, &db.list_shared::<Rec>("rec")),
            "no write in between: the same list"
        );
        // A write of another kind moves the revision too: read again.
        db.put("other", "x", &Rec { n: 9 }, None).await.unwrap();
        let again = db.list_shared::<Rec>("rec");
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(*again, [Rec { n: 1 }]);
        // A write of the kind is seen at once, in key order.
        db.put("rec", "0", &Rec { n: 0 }, None).await.unwrap();
        assert_eq!(*db.list_shared::<Rec>("rec"), [Rec { n: 0 }, Rec { n: 1 }]);
        db.delete("rec", "a").await.unwrap();
        assert_eq!(*db.list_shared::<Rec>("rec"), [Rec { n: 0 }]);
        // Read as another type: its own list.
        assert_eq!(db.list_shared::<serde_json::Value>("rec").len(), 1);
    }
}
