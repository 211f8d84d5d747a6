use super::*;

fn repo_run(
    op: Operation,
    key: &str,
    state: Option<RunState>,
    started: bool,
    minute: i64,
) -> RepoRun {
    RepoRun {
        op,
        key: key.into(),
        repository: "s3:http://s3/bucket".into(),
        state,
        started,
        created: Some(jiff::Timestamp::from_second(minute * 60).expect("ts")),
    }
}

#[test]
fn prune_waits_for_running_backup_on_same_repository() {
    let me = repo_run(Operation::Prune, "a/p", None, false, 5);
    let others = [repo_run(
        Operation::Backup,
        "b/x",
        Some(RunState::Running),
        true,
        1,
    )];
    assert_eq!(
        blocking_run(&me, RepoExistence::Proven, &others).map(|r| r.key.as_str()),
        Some("b/x")
    );
    let mut elsewhere = others.clone();
    elsewhere[0].repository = "s3:http://s3/other".into();
    assert_eq!(blocking_run(&me, RepoExistence::Proven, &elsewhere), None);
}

#[test]
fn backup_waits_for_running_prune_not_a_finished_one() {
    let me = repo_run(Operation::Backup, "a/b", None, false, 5);
    let prune = [repo_run(
        Operation::Prune,
        "a/p",
        Some(RunState::Running),
        true,
        1,
    )];
    assert!(blocking_run(&me, RepoExistence::Proven, &prune).is_some());
    let done = [repo_run(
        Operation::Prune,
        "a/p",
        Some(RunState::Succeeded),
        true,
        1,
    )];
    assert_eq!(blocking_run(&me, RepoExistence::Proven, &done), None);
}

#[test]
fn of_two_waiting_checks_the_older_goes_first() {
    let older = repo_run(Operation::Check, "a/c1", None, false, 1);
    let newer = repo_run(Operation::Prune, "a/p2", None, false, 2);
    let all = [older.clone(), newer.clone()];
    assert_eq!(blocking_run(&older, RepoExistence::Proven, &all), None);
    assert_eq!(
        blocking_run(&newer, RepoExistence::Proven, &all).map(|r| r.key.as_str()),
        Some("a/c1")
    );
}

#[test]
fn backup_waits_for_a_running_check_which_locks_exclusively() {
    let backup = repo_run(Operation::Backup, "a/b1", None, false, 5);
    let check = repo_run(Operation::Check, "a/c1", Some(RunState::Running), true, 1);
    assert_eq!(
        blocking_run(&backup, RepoExistence::Proven, std::slice::from_ref(&check))
            .map(|r| r.key.as_str()),
        Some("a/c1")
    );
}

#[test]
fn waiting_prune_is_not_starved_by_later_backups() {
    // The prune waits for backup b1; backup b2, created after the prune, waits for the prune.
    let b1 = repo_run(Operation::Backup, "a/b1", Some(RunState::Running), true, 1);
    let prune = repo_run(Operation::Prune, "a/p1", None, false, 2);
    let b2 = repo_run(Operation::Backup, "a/b2", None, false, 3);
    let all = [b1.clone(), prune.clone(), b2.clone()];
    assert_eq!(
        blocking_run(&prune, RepoExistence::Proven, &all).map(|r| r.key.as_str()),
        Some("a/b1")
    );
    assert_eq!(
        blocking_run(&b2, RepoExistence::Proven, &all).map(|r| r.key.as_str()),
        Some("a/p1")
    );
    // a backup created before the prune does not wait for it
    let b0 = repo_run(Operation::Backup, "a/b0", None, false, 0);
    assert_eq!(blocking_run(&b0, RepoExistence::Proven, &all), None);
}

#[test]
fn backups_and_restores_share_the_repository() {
    let b1 = repo_run(Operation::Backup, "a/b1", Some(RunState::Running), true, 1);
    let restore = repo_run(Operation::Restore, "a/r1", None, false, 2);
    let b2 = repo_run(Operation::Backup, "a/b2", None, false, 3);
    let all = [b1, restore.clone(), b2.clone()];
    assert_eq!(blocking_run(&restore, RepoExistence::Proven, &all), None);
    assert_eq!(blocking_run(&b2, RepoExistence::Proven, &all), None);
}

#[test]
fn second_backup_on_an_unproven_repository_waits_for_the_first_until_it_succeeds() {
    let mut b1 = repo_run(Operation::Backup, "a/b1", None, false, 1);
    let b2 = repo_run(Operation::Backup, "b/b2", None, false, 1);
    let all = [b1.clone(), b2.clone()];
    assert_eq!(blocking_run(&b1, RepoExistence::Unproven, &all), None);
    assert_eq!(
        blocking_run(&b2, RepoExistence::Unproven, &all).map(|r| r.key.as_str()),
        Some("a/b1"),
        "the first has not started yet, and may create the repository"
    );
    b1.started = true;
    b1.state = Some(RunState::Running);
    let all = [b1.clone(), b2.clone()];
    assert_eq!(
        blocking_run(&b2, RepoExistence::Unproven, &all).map(|r| r.key.as_str()),
        Some("a/b1"),
        "the first runs and may be creating the repository"
    );
    b1.state = Some(RunState::Succeeded);
    let all = [b1, b2.clone()];
    assert_eq!(blocking_run(&b2, RepoExistence::Proven, &all), None);
}

#[test]
fn next_backup_on_an_unproven_repository_starts_when_the_first_failed() {
    let b1 = repo_run(Operation::Backup, "a/b1", Some(RunState::Failed), true, 1);
    let b2 = repo_run(Operation::Backup, "a/b2", None, false, 2);
    let b3 = repo_run(Operation::Backup, "a/b3", None, false, 3);
    let all = [b1, b2.clone(), b3.clone()];
    assert_eq!(blocking_run(&b2, RepoExistence::Unproven, &all), None);
    assert_eq!(
        blocking_run(&b3, RepoExistence::Unproven, &all).map(|r| r.key.as_str()),
        Some("a/b2")
    );
}

#[test]
fn backups_on_a_proven_repository_start_together() {
    let waiting = [
        repo_run(Operation::Backup, "a/b1", None, false, 1),
        repo_run(Operation::Backup, "b/b2", None, false, 2),
    ];
    let running = [
        repo_run(Operation::Backup, "a/b1", Some(RunState::Running), true, 1),
        repo_run(Operation::Backup, "b/b2", None, false, 2),
    ];
    for all in [&waiting, &running] {
        for me in all {
            assert_eq!(blocking_run(me, RepoExistence::Proven, all), None, "{me:?}");
        }
    }
}

#[test]
fn of_three_waiting_backups_on_an_unproven_repository_only_the_oldest_may_start() {
    // Created in the same minute: the key breaks the tie, as for checks and prunes.
    let all = [
        repo_run(Operation::Backup, "c/nightly", None, false, 2),
        repo_run(Operation::Backup, "b/nightly", None, false, 1),
        repo_run(Operation::Backup, "a/nightly", None, false, 2),
    ];
    let free: Vec<&str> = all
        .iter()
        .filter(|me| blocking_run(me, RepoExistence::Unproven, &all).is_none())
        .map(|me| me.key.as_str())
        .collect();
    assert_eq!(free, ["b/nightly"]);
    // The others elsewhere do not count.
    let mut elsewhere = all.clone();
    elsewhere[1].repository = "s3:http://s3/other".into();
    assert_eq!(
        blocking_run(&elsewhere[0], RepoExistence::Unproven, &elsewhere).map(|r| r.key.as_str()),
        Some("a/nightly")
    );
}

#[test]
fn checks_prunes_and_restores_keep_their_rules_on_an_unproven_repository() {
    let b1 = repo_run(Operation::Backup, "a/b1", None, false, 1);
    let check = repo_run(Operation::Check, "a/c2", None, false, 2);
    let restore = repo_run(Operation::Restore, "a/r3", None, false, 3);
    let running = repo_run(Operation::Backup, "a/b0", Some(RunState::Running), true, 0);
    let all = [running, b1.clone(), check.clone(), restore.clone()];
    for existence in [RepoExistence::Proven, RepoExistence::Unproven] {
        // A check waits for the running backup, not for the older waiting one.
        assert_eq!(
            blocking_run(&check, existence, &all).map(|r| r.key.as_str()),
            Some("a/b0")
        );
        // A restore shares the repository with backups, and waits for the older check.
        assert_eq!(
            blocking_run(&restore, existence, &all).map(|r| r.key.as_str()),
            Some("a/c2")
        );
    }
    // A backup queued after a waiting check waits for it either way.
    let b4 = repo_run(Operation::Backup, "a/b4", None, false, 4);
    let all = [check, b4.clone()];
    for existence in [RepoExistence::Proven, RepoExistence::Unproven] {
        assert_eq!(
            blocking_run(&b4, existence, &all).map(|r| r.key.as_str()),
            Some("a/c2")
        );
    }
}

#[test]
fn backup_waiting_for_a_backup_on_an_unproven_repository_says_why() {
    let backup = Blocker {
        what: "Backup b/nightly".into(),
        op: Some(Operation::Backup),
    };
    assert_eq!(
        waiting_message(&backup, Operation::Backup, RepoExistence::Unproven),
        "waiting for Backup b/nightly on the same repository: the repository is not known \
         to exist yet, and only one backup may create it"
    );
    let check = Blocker {
        what: "check Job b/weekly-check".into(),
        op: Some(Operation::Check),
    };
    assert_eq!(
        waiting_message(&check, Operation::Backup, RepoExistence::Unproven),
        "waiting for check Job b/weekly-check on the same repository"
    );
    assert_eq!(
        waiting_message(&backup, Operation::Prune, RepoExistence::Unproven),
        "waiting for Backup b/nightly on the same repository"
    );
}

#[test]
fn verify_runs_beside_backups_and_restores_but_waits_for_a_prune_and_a_check() {
    let me = repo_run(Operation::Verify, "a/v", None, false, 5);
    let readers = [
        repo_run(Operation::Backup, "b/x", Some(RunState::Running), true, 1),
        repo_run(Operation::Restore, "b/r", Some(RunState::Running), true, 2),
        repo_run(Operation::Verify, "c/v", Some(RunState::Running), true, 3),
    ];
    assert_eq!(blocking_run(&me, RepoExistence::Proven, &readers), None);
    for exclusive in [Operation::Prune, Operation::Check] {
        let others = [repo_run(exclusive, "b/p", Some(RunState::Running), true, 1)];
        assert_eq!(
            blocking_run(&me, RepoExistence::Proven, &others).map(|r| r.key.as_str()),
            Some("b/p"),
            "{exclusive}"
        );
    }
    // and a prune never rewrites the repository under a running verification
    let prune = repo_run(Operation::Prune, "b/p", None, false, 6);
    let running = [repo_run(
        Operation::Verify,
        "a/v",
        Some(RunState::Running),
        true,
        5,
    )];
    assert_eq!(
        blocking_run(&prune, RepoExistence::Proven, &running).map(|r| r.key.as_str()),
        Some("a/v")
    );
    // a verification never waits for backups to prove the repository exists
    assert!(!waits_for_backups(
        Operation::Verify,
        RepoExistence::Unproven
    ));
}

#[test]
fn the_api_server_is_asked_for_the_jobs_the_rule_counts_and_no_others() {
    let selector = |me, existence| conflict_selector("repo", |op| job_conflicts(me, existence, op));
    let base = "app.kubernetes.io/managed-by=baas,backup.appuio.ch/repository=repo";
    assert_eq!(selector(Operation::Check, RepoExistence::Proven), base);
    assert_eq!(selector(Operation::Prune, RepoExistence::Unproven), base);
    assert_eq!(
        selector(Operation::Backup, RepoExistence::Proven),
        format!("{base},backup.appuio.ch/operation in (check,prune)")
    );
    assert_eq!(
        selector(Operation::Backup, RepoExistence::Unproven),
        format!("{base},backup.appuio.ch/operation in (backup,check,prune)")
    );
    assert_eq!(
        selector(Operation::Restore, RepoExistence::Unproven),
        format!("{base},backup.appuio.ch/operation in (check,prune)")
    );
}
