use super::*;
use serde_json::json;

fn job(name: &str, uid: &str, repository: &str, op: &str, status: serde_json::Value) -> JobState {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team", "uid": uid,
                     "labels": {LABEL_REPOSITORY: repository, LABEL_OPERATION: op},
                     "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup",
                                          "name": name, "uid": format!("owner-{uid}"), "controller": true}]},
        "status": status,
    }))
    .expect("test job")
}

fn running(name: &str, uid: &str, op: &str) -> JobState {
    job(name, uid, "repo", op, json!({"active": 1}))
}

fn complete(name: &str, uid: &str, op: &str) -> JobState {
    job(
        name,
        uid,
        "repo",
        op,
        json!({"conditions": [{"type": "Complete", "status": "True"}]}),
    )
}

fn listed(live: &LiveJobs, jobs: Vec<JobState>, at: Instant) {
    live.reflect(&watcher::Event::Init, at);
    for job in jobs {
        live.reflect(&watcher::Event::InitApply(job), at);
    }
    live.reflect(&watcher::Event::InitDone, at);
}

fn any(_: Option<Operation>) -> bool {
    true
}

fn blocker_key(live: &LiveJobs, owner: &str, at: Instant) -> Option<String> {
    live.blocker("repo", any, owner, at).map(|j| j.key)
}

#[test]
fn trusted_only_a_while_after_the_first_listing() {
    let live = LiveJobs::default();
    let t0 = Instant::now();
    assert!(!live.is_trusted(t0), "never listed");
    listed(&live, Vec::new(), t0);
    assert!(!live.is_trusted(t0 + TRUSTED_AFTER / 2));
    assert!(live.is_trusted(t0 + TRUSTED_AFTER));
    // A relist later does not start the wait again.
    listed(&live, Vec::new(), t0 + TRUSTED_AFTER * 2);
    assert!(live.is_trusted(t0 + TRUSTED_AFTER * 2));
}

#[test]
fn follows_the_watch_until_a_job_ends_or_goes() {
    let live = LiveJobs::default();
    let t0 = Instant::now();
    listed(
        &live,
        vec![
            running("b", "uid-b", "backup"),
            complete("old", "uid-o", "check"),
        ],
        t0,
    );
    assert_eq!(blocker_key(&live, "someone", t0).as_deref(), Some("team/b"));
    assert_eq!(blocker_key(&live, "owner-uid-b", t0), None, "its own run");
    live.reflect(&watcher::Event::Apply(running("a", "uid-a", "check")), t0);
    assert_eq!(
        blocker_key(&live, "someone", t0).as_deref(),
        Some("team/a"),
        "the first by key"
    );
    live.reflect(&watcher::Event::Apply(complete("a", "uid-a", "check")), t0);
    live.reflect(&watcher::Event::Delete(running("b", "uid-b", "backup")), t0);
    assert_eq!(blocker_key(&live, "someone", t0), None);
    let mut deleting = running("c", "uid-c", "prune");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    live.reflect(&watcher::Event::Apply(deleting), t0);
    assert_eq!(blocker_key(&live, "someone", t0), None, "being deleted");
}

#[test]
fn asks_which_operations_conflict_and_looks_only_at_its_repository() {
    let live = LiveJobs::default();
    let t0 = Instant::now();
    let other = job("x", "uid-x", "other-repo", "prune", json!({"active": 1}));
    listed(&live, vec![running("b", "uid-b", "backup"), other], t0);
    let checks_and_prunes = |op| matches!(op, Some(Operation::Check | Operation::Prune));
    assert_eq!(live.blocker("repo", checks_and_prunes, "me", t0), None);
    let found = live.blocker("repo", any, "me", t0).expect("the backup");
    assert_eq!(found.op, Some(Operation::Backup));
    assert_eq!(
        live.blocker("other-repo", any, "me", t0).map(|j| j.key),
        Some("team/x".into())
    );
    assert_eq!(live.blocker("nothing-here", any, "me", t0), None);
}

#[test]
fn a_job_created_here_counts_before_the_watch_shows_it() {
    let live = LiveJobs::default();
    let t0 = Instant::now();
    listed(&live, Vec::new(), t0);
    live.created(&running("new", "uid-n", "check"), t0);
    assert_eq!(blocker_key(&live, "me", t0).as_deref(), Some("team/new"));
    // The watch shows it, then its end.
    live.reflect(&watcher::Event::Apply(running("new", "uid-n", "check")), t0);
    live.reflect(
        &watcher::Event::Apply(complete("new", "uid-n", "check")),
        t0,
    );
    assert_eq!(blocker_key(&live, "me", t0), None);
}

#[test]
fn what_the_watch_showed_first_wins_over_a_late_create_response() {
    let live = LiveJobs::default();
    let t0 = Instant::now();
    listed(&live, Vec::new(), t0);
    live.reflect(&watcher::Event::Apply(running("new", "uid-n", "check")), t0);
    live.created(&running("new", "uid-n", "check"), t0);
    // Seen by the watch, it holds the repository as long as it runs, not only UNSEEN_HOLD.
    let later = t0 + UNSEEN_HOLD * 10;
    assert_eq!(blocker_key(&live, "me", later).as_deref(), Some("team/new"));
}

#[test]
fn a_created_job_the_watch_never_shows_stops_counting() {
    let live = LiveJobs::default();
    let t0 = Instant::now();
    listed(&live, Vec::new(), t0);
    // It ended and went before the create returned.
    live.reflect(
        &watcher::Event::Apply(running("fast", "uid-f", "check")),
        t0,
    );
    live.reflect(
        &watcher::Event::Delete(running("fast", "uid-f", "check")),
        t0,
    );
    live.created(&running("fast", "uid-f", "check"), t0);
    assert!(blocker_key(&live, "me", t0).is_some(), "counts at first");
    assert_eq!(blocker_key(&live, "me", t0 + UNSEEN_HOLD), None);
}

#[test]
fn a_relist_keeps_jobs_created_after_its_listing_was_read() {
    let live = LiveJobs::default();
    let t0 = Instant::now();
    listed(&live, vec![running("gone", "uid-g", "backup")], t0);
    live.reflect(&watcher::Event::Init, t0);
    live.created(&running("new", "uid-n", "check"), t0);
    live.reflect(&watcher::Event::InitDone, t0);
    assert_eq!(
        blocker_key(&live, "me", t0).as_deref(),
        Some("team/new"),
        "the Job created during the relist stays, the one the relist no longer holds goes"
    );
    assert!(live.blocker("repo", any, "owner-uid-n", t0).is_none());
    live.reflect(&watcher::Event::Init, t0 + UNSEEN_HOLD);
    live.reflect(&watcher::Event::InitDone, t0 + UNSEEN_HOLD);
    assert_eq!(
        blocker_key(&live, "me", t0 + UNSEEN_HOLD),
        None,
        "not past its hold"
    );
}
