//! What this process remembers between reconciles, beyond the caches: statuses it wrote that
//! the caches may not show yet, repositories known to exist, and claims to create one. All of
//! it can be lost at a restart; the API server's state is enough to go on, only slower.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// Statuses this process wrote that the watch cache may not show yet. A reconcile triggered
/// right after a status write (by the write itself, or by a Job it just created) would
/// otherwise act on the older status and repeat the work and the writes. An entry is dropped
/// as soon as the cache shows the same status, so the map only holds writes in flight.
pub struct Recent<S> {
    map: Mutex<HashMap<String, S>>,
}

impl<S> Default for Recent<S> {
    fn default() -> Self {
        Recent {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Clone + PartialEq> Recent<S> {
    /// The newest status of the object with `uid`: ours while the cache lags behind it.
    pub fn freshest(&self, uid: &str, cached: Option<&S>) -> Option<S> {
        let Ok(mut map) = self.map.lock() else {
            return cached.cloned();
        };
        match map.get(uid) {
            Some(mine) if Some(mine) == cached => {
                map.remove(uid);
                cached.cloned()
            }
            Some(mine) => Some(mine.clone()),
            None => cached.cloned(),
        }
    }

    /// The remembered status of `uid`, whatever the cache shows.
    pub fn get(&self, uid: &str) -> Option<S> {
        self.map.lock().ok()?.get(uid).cloned()
    }

    /// Forgets `uid`.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(uid);
        }
    }

    /// Remembers a status just written.
    pub fn wrote(&self, uid: &str, status: S) {
        if let Ok(mut map) = self.map.lock() {
            // Objects deleted before the cache caught up leave entries behind; bound them.
            if map.len() > 50_000 {
                map.clear();
            }
            map.insert(uid.to_string(), status);
        }
    }
}

/// Repositories known to exist, by their `backup.appuio.ch/repository` label: a Backup on
/// each has finished with a snapshot, so its `config` exists. Until then the first backups of
/// a repository take turns, so that only one of them can run `restic init` (two concurrent
/// ones leave keys that cannot open the one `config`). Filled from the Backups the run
/// reconciler sees, and it sees every cached one at startup: the set follows from the API
/// server's state, and a restart only makes the first backups of a repository wait longer.
#[derive(Default)]
pub struct ProvenRepositories {
    set: Mutex<HashSet<String>>,
}

impl ProvenRepositories {
    /// Whether the repository with this label is known to exist.
    pub fn contains(&self, label: &str) -> bool {
        self.set.lock().is_ok_and(|set| set.contains(label))
    }

    /// Remembers that the repository with this label exists.
    pub fn insert(&self, label: String) {
        if let Ok(mut set) = self.set.lock() {
            set.insert(label);
        }
    }
}

/// Backups this process let through to start on a repository not known to exist, by
/// repository label. Between that decision and the Job cache showing the backup's Job, a
/// backup of the same repository reconciled at the same moment (created in the same second,
/// its watch event first) finds nothing in the caches or the API server that stops it; the
/// claim does. A claim ends when its run ends or after `hold`, by which time its Jobs are in
/// the cache.
#[derive(Default)]
pub struct CreateClaims {
    map: Mutex<HashMap<String, CreateClaim>>,
}

struct CreateClaim {
    uid: String,
    key: String,
    at: std::time::Instant,
}

impl CreateClaims {
    /// Claims the repository `label` for the run `uid` (`key` is its `namespace/name`);
    /// the key of the run that holds it instead, if another does.
    pub fn claim(
        &self,
        label: &str,
        uid: &str,
        key: &str,
        now: std::time::Instant,
        hold: Duration,
    ) -> Option<String> {
        let Ok(mut map) = self.map.lock() else {
            return None;
        };
        map.retain(|_, c| now.saturating_duration_since(c.at) < hold);
        if let Some(other) = map.get(label).filter(|c| c.uid != uid) {
            return Some(other.key.clone());
        }
        map.insert(
            label.to_string(),
            CreateClaim {
                uid: uid.to_string(),
                key: key.to_string(),
                at: now,
            },
        );
        None
    }

    /// Ends the claim of the run `uid` on `label`, if it holds one.
    pub fn release(&self, label: &str, uid: &str) {
        if let Ok(mut map) = self.map.lock()
            && map.get(label).is_some_and(|c| c.uid == uid)
        {
            map.remove(label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_status_wins_until_the_cache_shows_it() {
        let recent: Recent<u32> = Recent::default();
        assert_eq!(recent.freshest("a", Some(&1)), Some(1));
        recent.wrote("a", 2);
        assert_eq!(
            recent.freshest("a", Some(&1)),
            Some(2),
            "cache lags behind the write"
        );
        assert_eq!(recent.freshest("a", Some(&2)), Some(2), "cache caught up");
        assert_eq!(
            recent.freshest("a", Some(&3)),
            Some(3),
            "entry dropped once seen"
        );
    }

    #[test]
    fn one_claim_to_create_a_repository_at_a_time_until_it_ends_or_expires() {
        let claims = CreateClaims::default();
        let hold = Duration::from_secs(60);
        let t0 = std::time::Instant::now();
        assert_eq!(claims.claim("repo", "uid-a", "a/first", t0, hold), None);
        assert_eq!(
            claims.claim("repo", "uid-b", "b/second", t0, hold),
            Some("a/first".into())
        );
        assert_eq!(
            claims.claim("repo", "uid-a", "a/first", t0, hold),
            None,
            "its own"
        );
        assert_eq!(claims.claim("other", "uid-b", "b/second", t0, hold), None);
        claims.release("repo", "uid-b");
        assert_eq!(
            claims.claim("repo", "uid-c", "c/third", t0, hold),
            Some("a/first".into()),
            "only the holder releases"
        );
        claims.release("repo", "uid-a");
        assert_eq!(claims.claim("repo", "uid-c", "c/third", t0, hold), None);
        let later = t0 + hold;
        assert_eq!(
            claims.claim("repo", "uid-d", "d/fourth", later, hold),
            None,
            "expired"
        );
    }
}
