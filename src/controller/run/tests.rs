use super::*;
use serde_json::json;

mod mocked {
    use super::start::{WAITING_RECHECK, ensure_rbac};
    use super::*;
    use crate::controller::fixtures::{
        Handle, backup, filled, list, mock_context, next, pod_terminated, report, respond,
        respond_error, running,
    };
    use crate::controller::stores::{JobState, Stores};
    use crate::crd::Backup;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::Value;

    fn context() -> (Arc<Context>, Handle) {
        mock_context(Stores::empty())
    }

    /// Answers a status patch with the run carrying that status, as the API server does.
    fn respond_with_status(send: crate::controller::fixtures::Reply, patch: &Value) {
        let mut answer = serde_json::to_value(backup(None)).expect("json");
        answer["status"] = patch["status"].clone();
        respond(send, 200, &answer);
    }

    /// Takes the next request as the creation of an Event of `type_` and `reason`.
    async fn expect_event(handle: &mut Handle, type_: &str, reason: &str) {
        let (method, uri, event, send) = next(handle).await;
        assert_eq!(method, http::Method::POST);
        assert!(
            uri.starts_with("/apis/events.k8s.io/v1/namespaces/team/events"),
            "{uri}"
        );
        assert_eq!(event["type"], type_);
        assert_eq!(event["reason"], reason);
        respond(send, 200, &event);
    }

    /// Takes the API server's look for conflicting Jobs on the repository; answers `jobs`.
    async fn expect_repository_jobs(handle: &mut Handle, jobs: Value) {
        let (method, uri, _, send) = next(handle).await;
        assert_eq!(method, http::Method::GET);
        assert!(uri.starts_with("/apis/batch/v1/jobs?"), "{uri}");
        assert!(
            uri.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dbaas%2Cbackup.appuio.ch%2Frepository%3D"),
            "{uri}"
        );
        respond(send, 200, &list("Job", jobs));
    }

    /// Takes the status write of a run that failed and its Warning Event; the written status.
    async fn expect_failed_run(handle: &mut Handle) -> Value {
        let (method, _, patch, send) = next(handle).await;
        assert_eq!(method, http::Method::PATCH);
        assert_eq!(patch["status"]["state"], "Failed", "{patch}");
        respond_with_status(send, &patch);
        expect_event(handle, "Warning", "Failed").await;
        patch["status"].clone()
    }

    #[tokio::test]
    async fn new_backup_creates_its_job_and_reports_running() {
        let (ctx, mut handle) = context();
        let server = tokio::spawn(async move {
            expect_repository_jobs(&mut handle, json!([])).await;
            let (method, uri, _, send) = next(&mut handle).await;
            assert_eq!(
                (method, uri.split('?').next().unwrap_or_default()),
                (
                    http::Method::GET,
                    "/api/v1/namespaces/team/persistentvolumeclaims"
                )
            );
            respond(
                send,
                200,
                &list(
                    "PersistentVolumeClaim",
                    json!([{
                "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteMany"]}, "status": {"phase": "Bound"}}]),
                ),
            );
            let (_, uri, _, send) = next(&mut handle).await;
            assert!(uri.starts_with("/api/v1/namespaces/team/pods"), "{uri}");
            respond(send, 200, &list("Pod", json!([])));
            expect_agent_rbac_applied(&mut handle).await;
            let (method, uri, job, send) = next(&mut handle).await;
            assert_eq!(
                (method, uri.split('?').next().unwrap_or_default()),
                (http::Method::POST, "/apis/batch/v1/namespaces/team/jobs")
            );
            assert_eq!(
                job["metadata"]["name"],
                "nightly-backup-202601010100-backup"
            );
            assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "bk-uid");
            assert_eq!(
                job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
                "/data/data"
            );
            respond(send, 200, &job);
            let (method, uri, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH);
            assert!(uri.starts_with("/apis/backup.appuio.ch/v1alpha1/namespaces/team/backups/nightly-backup-202601010100/status"), "{uri}");
            assert_eq!(patch["status"]["state"], "Running");
            assert_eq!(
                patch["status"]["jobs"],
                json!(["nightly-backup-202601010100-backup"])
            );
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Normal", "Started").await;
        });
        reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn finished_job_turns_into_succeeded_status_and_an_event() {
        let (ctx, mut handle) = context();
        let previous =
            serde_json::to_value(running(&["nightly-backup-202601010100-backup"])).expect("json");
        let report = report(RunState::Succeeded, "abc123").to_termination_message();
        let server = tokio::spawn(async move {
            let (_, uri, _, send) = next(&mut handle).await;
            assert!(
                uri.starts_with("/apis/batch/v1/namespaces/team/jobs?"),
                "{uri}"
            );
            assert!(
                uri.contains("labelSelector=backup.appuio.ch%2Frun%3Dnightly-backup-202601010100"),
                "{uri}"
            );
            respond(
                send,
                200,
                &json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": [{
                "metadata": {"name": "nightly-backup-202601010100-backup", "namespace": "team",
                             "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup", "name": "x", "uid": "bk-uid", "controller": true}]},
                "status": {"conditions": [{"type": "Complete", "status": "True"}]}}]}),
            );
            let (_, uri, _, send) = next(&mut handle).await;
            assert!(uri.starts_with("/api/v1/namespaces/team/pods?"), "{uri}");
            respond(
                send,
                200,
                &list(
                    "Pod",
                    json!([serde_json::to_value(pod_terminated(
                        "nightly-backup-202601010100-backup",
                        0,
                        "Completed",
                        Some(report)
                    ))
                    .expect("json")]),
                ),
            );
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH);
            assert_eq!(patch["status"]["state"], "Succeeded");
            assert_eq!(patch["status"]["snapshotID"], "abc123");
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Normal", "Succeeded").await;
        });
        let action = reconcile(Arc::new(backup(Some(previous))), ctx.clone())
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        assert!(ctx.proven_repositories.contains(&repository()));
        server.await.expect("mock server");
    }

    /// Stores whose caches are filled, holding `jobs`.
    fn filled_stores(jobs: Vec<Job>) -> Stores {
        Stores {
            jobs: filled(jobs.into_iter().map(JobState::from).collect()),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            ..Stores::empty()
        }
    }

    fn cached_job(name: &str, created: jiff::Timestamp, active: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "team", "creationTimestamp": created.to_string(),
                         "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup", "name": "x", "uid": "bk-uid", "controller": true}]},
            "status": {"active": active},
        }))
        .expect("test job")
    }

    #[tokio::test]
    async fn new_backup_with_filled_caches_defers_the_status_and_still_fails_when_its_job_vanishes()
    {
        let (ctx, mut handle) = mock_context(filled_stores(Vec::new()));
        let server = tokio::spawn(async move {
            expect_repository_jobs(&mut handle, json!([])).await;
            expect_planning(&mut handle).await;
            expect_agent_rbac_applied(&mut handle).await;
            let (method, uri, job, send) = next(&mut handle).await;
            assert_eq!(
                (method, uri.split('?').next().unwrap_or_default()),
                (http::Method::POST, "/apis/batch/v1/namespaces/team/jobs")
            );
            respond(send, 200, &job);
            // The next request comes from the second reconcile: no Running status (and so
            // no Started Event) came between, and the Job that vanished from the cache
            // fails the run.
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH);
            assert_eq!(patch["status"]["state"], "Failed", "{patch}");
            assert_eq!(
                patch["status"]["jobs"],
                json!(["nightly-backup-202601010100-backup"])
            );
            respond_with_status(send, &patch);
            let (method, _, event, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::POST);
            assert_eq!(event["type"], "Warning");
            respond(send, 200, &event);
        });
        let action = reconcile(Arc::new(backup(None)), ctx.clone())
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(RUNNING_RECHECK));
        // The Job is deleted before any status named it (the cache never showed it here).
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("second reconcile");
        assert_eq!(action, Action::await_change());
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn cached_job_without_status_is_neither_created_again_nor_written_early() {
        let created = crate::controller::now_seconds();
        let stores = filled_stores(vec![cached_job(
            "nightly-backup-202601010100-backup",
            created,
            1,
        )]);
        let (ctx, mut handle) = mock_context(stores);
        let server = tokio::spawn(async move {
            assert!(
                handle.next_request().await.is_none(),
                "no API call while the young Job runs"
            );
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert!(
            action != Action::await_change() && action != Action::requeue(Duration::ZERO),
            "{action:?}"
        );
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn job_running_past_the_recheck_gets_its_running_status_written() {
        let created = crate::controller::now_seconds() - jiff::SignedDuration::from_secs(40);
        let stores = filled_stores(vec![cached_job(
            "nightly-backup-202601010100-backup",
            created,
            1,
        )]);
        let (ctx, mut handle) = mock_context(stores);
        let server = tokio::spawn(async move {
            let (method, uri, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH);
            assert!(
                uri.contains("/backups/nightly-backup-202601010100/status"),
                "{uri}"
            );
            assert_eq!(patch["status"]["state"], "Running");
            assert_eq!(
                patch["status"]["jobs"],
                json!(["nightly-backup-202601010100-backup"])
            );
            assert_eq!(patch["status"]["startedAt"], json!(created.to_string()));
            respond_with_status(send, &patch);
            // The Started Event comes with the first Running status, not with the Job.
            expect_event(&mut handle, "Normal", "Started").await;
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(RUNNING_RECHECK));
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn old_job_without_pods_is_not_written_as_running() {
        let created = crate::controller::now_seconds() - jiff::SignedDuration::from_secs(40);
        let stores = filled_stores(vec![cached_job(
            "nightly-backup-202601010100-backup",
            created,
            0,
        )]);
        let (ctx, mut handle) = mock_context(stores);
        let server = tokio::spawn(async move {
            assert!(
                handle.next_request().await.is_none(),
                "no write while no pod runs"
            );
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(RUNNING_RECHECK));
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn job_deleted_while_running_fails_the_run_with_a_warning_from_the_cache() {
        let previous =
            serde_json::to_value(running(&["nightly-backup-202601010100-backup"])).expect("json");
        let (ctx, mut handle) = mock_context(filled_stores(Vec::new()));
        let server = tokio::spawn(async move {
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(
                method,
                http::Method::PATCH,
                "no list: the Job cache answers"
            );
            assert_eq!(patch["status"]["state"], "Failed");
            assert!(
                patch["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("was deleted before it finished"),
                "{patch}"
            );
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Warning", "Failed").await;
        });
        let action = reconcile(Arc::new(backup(Some(previous))), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn a_schedules_run_that_ended_is_not_ended_again_while_the_cache_lags() {
        let previous =
            serde_json::to_value(running(&["nightly-backup-202601010100-backup"])).expect("json");
        let mut run = backup(Some(previous));
        run.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({"apiVersion": "backup.appuio.ch/v1alpha1",
                "kind": "Schedule", "name": "nightly", "uid": "sched-uid", "controller": true}))
            .expect("owner"),
        ]);
        let run = Arc::new(run);
        let (ctx, mut handle) = mock_context(filled_stores(Vec::new()));
        let server = tokio::spawn(async move {
            expect_failed_run(&mut handle).await;
            assert!(
                handle.next_request().await.is_none(),
                "one status write and one Event"
            );
        });
        reconcile(run.clone(), ctx.clone())
            .await
            .expect("reconcile");
        assert!(
            ctx.stores.finished.contains(run.as_ref()),
            "kept as finished"
        );
        // Woken again (by its own status write, say) before the watch shows the end.
        let action = reconcile(run, ctx.clone()).await.expect("reconcile");
        assert_eq!(action, Action::await_change());
        drop(ctx);
        server.await.expect("mock server");
    }

    /// Answers the planning of a backup of one ReadWriteMany claim and the agent's RBAC,
    /// up to the Job's creation, which it returns unanswered.
    async fn plan_until_job_create(
        handle: &mut Handle,
    ) -> (Value, crate::controller::fixtures::Reply) {
        expect_repository_jobs(handle, json!([])).await;
        expect_planning(handle).await;
        expect_agent_rbac_applied(handle).await;
        let (method, uri, job, send) = next(handle).await;
        assert_eq!(method, http::Method::POST, "{uri}");
        (job, send)
    }

    /// Takes the planning of the test backup: one bound claim, no pods.
    async fn expect_planning(handle: &mut Handle) {
        let (_, uri, _, send) = next(handle).await;
        assert!(
            uri.starts_with("/api/v1/namespaces/team/persistentvolumeclaims"),
            "{uri}"
        );
        respond(
            send,
            200,
            &list(
                "PersistentVolumeClaim",
                json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteMany"]}, "status": {"phase": "Bound"}}]),
            ),
        );
        let (_, uri, _, send) = next(handle).await;
        assert!(uri.starts_with("/api/v1/namespaces/team/pods"), "{uri}");
        respond(send, 200, &list("Pod", json!([])));
    }

    /// A running check Job on the test backups' repository, in another namespace.
    fn running_check_job() -> Value {
        json!({"metadata": {"name": "weekly-check-202601010000-check", "namespace": "other",
            "uid": "check-job-uid",
            "labels": {"backup.appuio.ch/operation": "check", "backup.appuio.ch/repository": repository()},
            "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Check",
                "name": "weekly-check-202601010000", "uid": "check-uid", "controller": true}]},
            "status": {"active": 1}})
    }

    /// What a run waiting for [`running_check_job`] says.
    const CHECK_JOB_WAIT: &str =
        "waiting for check Job other/weekly-check-202601010000-check on the same repository";

    /// Takes the Pending status of a run that waits with `message` (no Job is created first)
    /// and its Event.
    async fn expect_waiting(handle: &mut Handle, message: &str) {
        let (method, uri, patch, send) = next(handle).await;
        assert_eq!(method, http::Method::PATCH, "{uri}");
        assert_eq!(patch["status"]["state"], "Pending");
        assert_eq!(patch["status"]["message"], message);
        respond_with_status(send, &patch);
        expect_event(handle, "Normal", "WaitingForRepository").await;
    }

    #[tokio::test]
    async fn backup_waits_for_a_running_check_the_cache_does_not_show_yet() {
        let (ctx, mut handle) = context();
        ctx.proven_repositories.insert(repository());
        let server = tokio::spawn(async move {
            let (_, uri, _, send) = next(&mut handle).await;
            assert!(
                uri.contains("backup.appuio.ch%2Foperation+in+%28check%2Cprune%29"),
                "a backup only looks for exclusive runs: {uri}"
            );
            respond(send, 200, &list("Job", json!([running_check_job()])));
            expect_waiting(&mut handle, CHECK_JOB_WAIT).await;
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(WAITING_RECHECK));
        server.await.expect("mock server");
    }

    /// Stores whose caches are filled and whose index of live Jobs answers for the API
    /// server, holding `jobs`.
    fn trusted_stores(jobs: Vec<Value>) -> Stores {
        let jobs: Vec<JobState> = jobs
            .into_iter()
            .map(|j| serde_json::from_value(j).expect("test job"))
            .collect();
        Stores {
            live_jobs: crate::controller::stores::trusted_long_ago(jobs.clone()),
            jobs: filled(jobs),
            ..filled_stores(Vec::new())
        }
    }

    #[tokio::test]
    async fn backup_waits_for_a_running_check_job_the_trusted_index_shows_without_asking() {
        let (ctx, mut handle) = mock_context(trusted_stores(vec![running_check_job()]));
        ctx.proven_repositories.insert(repository());
        let server = tokio::spawn(async move {
            // No list of Jobs comes first.
            expect_waiting(&mut handle, CHECK_JOB_WAIT).await;
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(WAITING_RECHECK));
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn a_job_just_created_holds_its_repository_before_any_cache_shows_it() {
        let (ctx, mut handle) = mock_context(trusted_stores(Vec::new()));
        ctx.proven_repositories.insert(repository());
        let server = tokio::spawn(async move {
            // The index answers: planning comes first, with no list of Jobs.
            expect_planning(&mut handle).await;
            expect_agent_rbac_applied(&mut handle).await;
            let (method, uri, mut job, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::POST, "{uri}");
            job["metadata"]["uid"] = json!("backup-job-uid");
            respond(send, 200, &job);
            // The Check comes next: neither the run cache nor the Job cache shows the backup.
            expect_waiting(
                &mut handle,
                "waiting for backup Job team/nightly-backup-202601010100-backup on the same repository",
            )
            .await;
        });
        let action = reconcile(Arc::new(backup(None)), ctx.clone())
            .await
            .expect("backup reconcile");
        assert_eq!(action, Action::requeue(RUNNING_RECHECK));
        let check: crate::crd::Check = run_of("Check", json!({}));
        let action = reconcile(Arc::new(check), ctx)
            .await
            .expect("check reconcile");
        assert_eq!(action, Action::requeue(WAITING_RECHECK));
        server.await.expect("mock server");
    }

    /// The label of the test backups' repository.
    fn repository() -> String {
        job::repository_label(&job::repository_url(&backup(None).spec.backend))
    }

    /// Another Backup on the same repository that has not started, created a minute before.
    fn earlier_backup(namespace: &str, name: &str) -> Backup {
        let mut run = backup(None);
        run.metadata.namespace = Some(namespace.into());
        run.metadata.name = Some(name.into());
        run.metadata.uid = Some(format!("{name}-uid"));
        run.metadata.creation_timestamp = Some(Time(
            crate::controller::now_seconds() - jiff::SignedDuration::from_mins(1),
        ));
        run
    }

    /// Filled stores holding `backups` and no Jobs.
    fn stores_with_backups(backups: Vec<Backup>) -> Stores {
        Stores {
            backups: filled(backups),
            ..filled_stores(Vec::new())
        }
    }

    /// Takes the look for conflicting Jobs; asserts the operations it selects.
    async fn expect_repository_jobs_of(handle: &mut Handle, operations: &str, jobs: Value) {
        let (method, uri, _, send) = next(handle).await;
        assert_eq!(method, http::Method::GET);
        let selector = format!("backup.appuio.ch%2Foperation+in+%28{operations}%29");
        assert!(
            uri.ends_with(&selector) || uri.contains(&format!("{selector}&")),
            "{uri}"
        );
        respond(send, 200, &list("Job", jobs));
    }

    #[tokio::test]
    async fn second_backup_on_an_unproven_repository_waits_for_the_first_then_starts() {
        let first = earlier_backup("shop", "hourly-backup-202601010100");
        let (ctx, mut handle) = mock_context(stores_with_backups(vec![first.clone()]));
        let server = tokio::spawn(async move {
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(
                method,
                http::Method::PATCH,
                "the cache answers: no Job, no list"
            );
            assert_eq!(patch["status"]["state"], "Pending");
            assert_eq!(
                patch["status"]["message"],
                "waiting for Backup shop/hourly-backup-202601010100 on the same repository: \
                 the repository is not known to exist yet, and only one backup may create it"
            );
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Normal", "WaitingForRepository").await;
            // Once the first has succeeded, the second looks only for checks and prunes.
            expect_repository_jobs_of(&mut handle, "check%2Cprune", json!([])).await;
            expect_planning(&mut handle).await;
            expect_agent_rbac_applied(&mut handle).await;
            let (method, uri, job, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::POST, "{uri}");
            respond(send, 200, &job);
        });
        let action = reconcile(Arc::new(backup_created_ago(0)), ctx.clone())
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(WAITING_RECHECK));
        // The first Backup succeeds; its reconcile (here: of the cached, stripped object,
        // as at startup) proves the repository.
        let mut succeeded = first;
        succeeded.status = Some(with_state(
            RunStatus::default(),
            RunState::Succeeded,
            "Succeeded",
            "",
            None,
            crate::controller::now_seconds(),
        ));
        succeeded
            .labels_mut()
            .insert(job::LABEL_REPOSITORY.into(), repository());
        crate::controller::stores::strip_run(&mut succeeded);
        let action = reconcile(Arc::new(succeeded), ctx.clone())
            .await
            .expect("reconcile of the first");
        assert_eq!(action, Action::await_change());
        let action = reconcile(Arc::new(backup_created_ago(0)), ctx)
            .await
            .expect("second reconcile");
        assert_eq!(action, Action::requeue(RUNNING_RECHECK));
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn backups_on_a_proven_repository_do_not_wait_for_each_other() {
        let first = earlier_backup("shop", "hourly-backup-202601010100");
        let (ctx, mut handle) = mock_context(stores_with_backups(vec![first]));
        ctx.proven_repositories.insert(repository());
        let server = tokio::spawn(async move {
            expect_repository_jobs_of(&mut handle, "check%2Cprune", json!([])).await;
            // Planning follows; that it starts is enough here.
            let (_, uri, _, _) = next(&mut handle).await;
            assert!(uri.contains("/persistentvolumeclaims"), "{uri}");
        });
        let _ = reconcile(Arc::new(backup_created_ago(0)), ctx).await;
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn backup_on_an_unproven_repository_waits_for_a_backup_job_the_cache_does_not_show_yet() {
        let (ctx, mut handle) = context();
        let server = tokio::spawn(async move {
            expect_repository_jobs_of(
                &mut handle,
                "backup%2Ccheck%2Cprune",
                json!([{"metadata": {"name": "hourly-backup-202601010100-backup", "namespace": "shop",
                    "labels": {"backup.appuio.ch/operation": "backup"},
                    "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup",
                        "name": "hourly-backup-202601010100", "uid": "other-uid", "controller": true}]},
                    "status": {"active": 1}}]),
            )
            .await;
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH, "no Job may be created");
            assert_eq!(patch["status"]["state"], "Pending");
            assert_eq!(
                patch["status"]["message"],
                "waiting for backup Job shop/hourly-backup-202601010100-backup on the same \
                 repository: the repository is not known to exist yet, and only one backup \
                 may create it"
            );
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Normal", "WaitingForRepository").await;
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(WAITING_RECHECK));
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn backup_reconciled_while_another_starts_on_an_unproven_repository_waits_for_it() {
        // Neither cache nor API server shows the other: both were created in the same second,
        // and the first one's Job is not created yet when the second is reconciled.
        let (ctx, mut handle) = context();
        let server = tokio::spawn(async move {
            let (_, send) = plan_until_job_create(&mut handle).await;
            let job = json!({"metadata": {"name": "nightly-backup-202601010100-backup"}});
            respond(send, 200, &job);
            // Without a Job cache, the Running status is written at once.
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH);
            assert_eq!(patch["status"]["state"], "Running");
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Normal", "Started").await;
            expect_repository_jobs_of(&mut handle, "backup%2Ccheck%2Cprune", json!([])).await;
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH, "no second Job may be created");
            assert_eq!(
                patch["status"]["message"],
                "waiting for Backup team/nightly-backup-202601010100 on the same repository: \
                 the repository is not known to exist yet, and only one backup may create it"
            );
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Normal", "WaitingForRepository").await;
        });
        reconcile(Arc::new(backup_created_ago(0)), ctx.clone())
            .await
            .expect("first reconcile");
        let second = earlier_backup("team", "hourly-backup-202601010100");
        let action = reconcile(Arc::new(second), ctx)
            .await
            .expect("second reconcile");
        assert_eq!(action, Action::requeue(WAITING_RECHECK));
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn only_a_backup_with_a_snapshot_proves_its_repository() {
        for (state, proves) in [
            ("Succeeded", true),
            ("PartiallySucceeded", true),
            ("Failed", false),
        ] {
            let (ctx, mut handle) = context();
            let server = tokio::spawn(async move {
                assert!(
                    handle.next_request().await.is_none(),
                    "a finished run is left alone"
                );
            });
            let run = backup(Some(json!({"state": state})));
            let action = reconcile(Arc::new(run), ctx.clone())
                .await
                .expect("reconcile");
            assert_eq!(action, Action::await_change());
            assert_eq!(
                ctx.proven_repositories.contains(&repository()),
                proves,
                "{state}"
            );
            drop(ctx);
            server.await.expect("mock server");
        }
    }

    #[tokio::test]
    async fn job_name_taken_by_a_foreign_job_fails_the_run() {
        let (ctx, mut handle) = context();
        let server = tokio::spawn(async move {
            let (_, send) = plan_until_job_create(&mut handle).await;
            respond_error(send, 409, "AlreadyExists", "jobs.batch already exists");
            let (method, uri, _, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::GET);
            assert!(
                uri.starts_with(
                    "/apis/batch/v1/namespaces/team/jobs/nightly-backup-202601010100-backup"
                ),
                "{uri}"
            );
            respond(
                send,
                200,
                &json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
                    "name": "nightly-backup-202601010100-backup", "namespace": "team",
                    "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup",
                        "name": "nightly.backup-202601010100", "uid": "someone-else", "controller": true}]}}),
            );
            let status = expect_failed_run(&mut handle).await;
            assert!(
                status["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("is taken by a Job this run does not own"),
                "{status}"
            );
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        server.await.expect("mock server");
    }

    fn backup_created_ago(minutes: i64) -> Backup {
        let mut run = backup(None);
        run.metadata.creation_timestamp = Some(Time(
            crate::controller::now_seconds() - jiff::SignedDuration::from_mins(minutes),
        ));
        run
    }

    #[tokio::test]
    async fn job_that_cannot_be_created_is_retried_within_the_grace() {
        let (ctx, mut handle) = context();
        let server = tokio::spawn(async move {
            let (_, send) = plan_until_job_create(&mut handle).await;
            respond_error(
                send,
                403,
                "Forbidden",
                "exceeded quota: jobs, requested: count/jobs.batch=1",
            );
        });
        let result = reconcile(Arc::new(backup_created_ago(1)), ctx).await;
        assert!(result.is_err(), "{result:?}");
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn job_that_cannot_be_created_past_the_grace_fails_the_run_with_the_cause() {
        let (ctx, mut handle) = context();
        let server = tokio::spawn(async move {
            let (_, send) = plan_until_job_create(&mut handle).await;
            respond_error(
                send,
                403,
                "Forbidden",
                "exceeded quota: jobs, requested: count/jobs.batch=1",
            );
            let status = expect_failed_run(&mut handle).await;
            let message = status["message"].as_str().unwrap_or_default();
            assert!(message.contains("exceeded quota: jobs"), "{message}");
            let failed = status["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Failed").cloned())
                .expect("Failed condition");
            assert_eq!(
                (failed["status"].as_str(), failed["reason"].as_str()),
                (Some("True"), Some("JobNotCreated"))
            );
        });
        let action = reconcile(Arc::new(backup_created_ago(5)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn job_whose_pods_are_refused_fails_the_run_after_the_grace() {
        let name = "nightly-backup-202601010100-backup";
        let created = crate::controller::now_seconds() - jiff::SignedDuration::from_mins(4);
        let previous = serde_json::to_value(running(&[name])).expect("json");
        let (ctx, mut handle) = mock_context(filled_stores(vec![cached_job(name, created, 0)]));
        let refusal = "Error creating: pods \"nightly-backup-202601010100-backup-x7k2p\" is forbidden: \
                       violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false";
        let server = tokio::spawn(async move {
            let (_, uri, _, send) = next(&mut handle).await;
            assert!(uri.starts_with("/api/v1/namespaces/team/pods?"), "{uri}");
            respond(send, 200, &list("Pod", json!([])));
            let (_, uri, _, send) = next(&mut handle).await;
            assert!(uri.starts_with("/api/v1/namespaces/team/events?"), "{uri}");
            assert!(uri.contains("reason%3DFailedCreate"), "{uri}");
            respond(
                send,
                200,
                &list(
                    "Event",
                    json!([{"metadata": {"name": "e1", "namespace": "team"},
                        "involvedObject": {"kind": "Job", "name": name},
                        "reason": "FailedCreate", "message": refusal,
                        "lastTimestamp": created.to_string()}]),
                ),
            );
            let status = expect_failed_run(&mut handle).await;
            let message = status["message"].as_str().unwrap_or_default();
            assert!(message.contains("violates PodSecurity"), "{message}");
            // the Job that would otherwise sit until its deadline goes
            let (method, uri, _, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::DELETE);
            assert!(uri.contains(name), "{uri}");
            respond(
                send,
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            );
        });
        let action = reconcile(Arc::new(backup(Some(previous))), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn young_job_without_pods_is_left_to_start() {
        let name = "nightly-backup-202601010100-backup";
        let created = crate::controller::now_seconds() - jiff::SignedDuration::from_mins(1);
        let previous = serde_json::to_value(running(&[name])).expect("json");
        let (ctx, mut handle) = mock_context(filled_stores(vec![cached_job(name, created, 0)]));
        let server = tokio::spawn(async move {
            assert!(
                handle.next_request().await.is_none(),
                "no request while the Job is young"
            );
        });
        let action = reconcile(Arc::new(backup(Some(previous))), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(RUNNING_RECHECK));
        server.await.expect("mock server");
    }

    async fn expect_agent_rbac_applied(handle: &mut Handle) {
        for expected in ["serviceaccounts/baas-agent", "rolebindings/baas-agent"] {
            let (method, uri, body, send) = next(handle).await;
            assert_eq!(method, http::Method::PATCH, "{uri}");
            assert!(
                uri.contains(expected) && uri.contains("fieldManager=baas"),
                "{uri}"
            );
            respond(send, 200, &body);
        }
    }

    fn context_with_rbac_done(namespace: &str) -> (Arc<Context>, Handle) {
        let (ctx, handle) = context();
        ctx.rbac_done
            .lock()
            .expect("not poisoned")
            .insert(namespace.to_string());
        (ctx, handle)
    }

    #[tokio::test]
    async fn namespace_created_again_under_its_name_gets_the_agent_account_again() {
        let (ctx, mut handle) = context_with_rbac_done("team");
        let server = tokio::spawn(async move {
            let (method, uri, _, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::GET);
            assert!(
                uri.starts_with("/api/v1/namespaces/team/serviceaccounts/baas-agent"),
                "{uri}"
            );
            respond_error(send, 404, "NotFound", "not found");
            expect_agent_rbac_applied(&mut handle).await;
        });
        ensure_rbac(&ctx, "team").await.expect("agent RBAC applied");
        // the client goes away, so a mock still waiting for a request fails instead of hanging
        drop(ctx);
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn the_agent_account_read_goes_alongside_the_job_creation() {
        let (ctx, mut handle) = context_with_rbac_done("team");
        let server = tokio::spawn(async move {
            expect_repository_jobs(&mut handle, json!([])).await;
            expect_planning(&mut handle).await;
            let (method, uri, _, account) = next(&mut handle).await;
            assert_eq!(method, http::Method::GET);
            assert!(uri.contains("/serviceaccounts/baas-agent"), "{uri}");
            // The Job's creation comes before the read is answered.
            let (method, uri, job, created) =
                tokio::time::timeout(std::time::Duration::from_secs(5), next(&mut handle))
                    .await
                    .expect("the Job is created without waiting for the read");
            assert_eq!(method, http::Method::POST, "{uri}");
            respond(created, 200, &job);
            respond(
                account,
                200,
                &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "baas-agent", "namespace": "team"}}),
            );
            // Without a Job cache, the Running status follows.
            let (method, _, patch, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::PATCH);
            assert_eq!(patch["status"]["state"], "Running");
            respond_with_status(send, &patch);
            expect_event(&mut handle, "Normal", "Started").await;
        });
        let action = reconcile(Arc::new(backup(None)), ctx)
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(RUNNING_RECHECK));
        server.await.expect("mock server");
    }

    #[tokio::test]
    async fn namespace_whose_agent_account_exists_costs_one_read() {
        let (ctx, mut handle) = context_with_rbac_done("team");
        let server = tokio::spawn(async move {
            let (method, uri, _, send) = next(&mut handle).await;
            assert_eq!(method, http::Method::GET, "{uri}");
            respond(
                send,
                200,
                &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "baas-agent", "namespace": "team"}}),
            );
            // no further request may come
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(200), handle.next_request())
                    .await
                    .is_err(),
                "a write followed the read"
            );
        });
        ensure_rbac(&ctx, "team").await.expect("nothing to do");
        server.await.expect("mock server");
    }

    /// A run of `kind` in `team` on the fixtures' repository, with `spec` beside its backend.
    fn run_of<K: RunKind>(kind: &str, mut spec: Value) -> K {
        spec["backend"] = crate::controller::fixtures::backend();
        serde_json::from_value(json!({
            "apiVersion": "backup.appuio.ch/v1alpha1",
            "kind": kind,
            "metadata": {"name": "manual", "namespace": "team", "uid": "run-uid"},
            "spec": spec,
        }))
        .expect("test run")
    }

    /// Each Job `run` asks for, when nothing needs the API server: its operation label and
    /// the agent's environment, `NAME=value` (Secret refs as `NAME`).
    async fn built_jobs<K: RunKind>(run: &K) -> Vec<(String, Vec<String>)> {
        let (ctx, _handle) = context();
        let meta = run_meta(run).expect("meta");
        let (jobs, problems) = super::start::build_jobs(&ctx, run, &meta)
            .await
            .expect("jobs");
        assert!(problems.is_empty());
        jobs.iter()
            .map(|j| {
                let op = j.labels().get(LABEL_OPERATION).cloned().unwrap_or_default();
                let pod = j.spec.as_ref().and_then(|s| s.template.spec.as_ref());
                let env = pod
                    .into_iter()
                    .flat_map(|p| p.containers.iter())
                    .flat_map(|c| c.env.iter().flatten())
                    .map(|e| match &e.value {
                        Some(value) => format!("{}={value}", e.name),
                        None => e.name.clone(),
                    })
                    .collect();
                (op, env)
            })
            .collect()
    }

    #[tokio::test]
    async fn check_prune_and_restore_runs_each_get_the_job_of_their_own_operation() {
        let has = |env: &[String], prefix: &str| env.iter().any(|e| e.starts_with(prefix));
        let check: crate::crd::Check = run_of("Check", json!({}));
        let jobs = built_jobs(&check).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].0, "check");
        assert!(!has(&jobs[0].1, "BAAS_RETENTION") && !has(&jobs[0].1, "BAAS_RESTORE"));
        let prune: crate::crd::Prune = run_of("Prune", json!({"retention": {"keepLast": 3}}));
        let jobs = built_jobs(&prune).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].0, "prune");
        assert!(
            jobs[0]
                .1
                .iter()
                .any(|e| e.starts_with("BAAS_RETENTION=") && e.contains('3'))
        );
        let restore: crate::crd::Restore = run_of(
            "Restore",
            json!({"restoreMethod": {"s3": {"endpoint": "http://minio:9000", "bucket": "restored",
                   "accessKeyIDSecretRef": {"name": "c", "key": "username"},
                   "secretAccessKeySecretRef": {"name": "c", "key": "password"}}}}),
        );
        let jobs = built_jobs(&restore).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].0, "restore");
        assert!(
            has(&jobs[0].1, "BAAS_RESTORE_S3_BUCKET=restored"),
            "{:?}",
            jobs[0].1
        );
    }
}
