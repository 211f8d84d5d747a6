use super::*;
use crate::lookup::{PvcInfo, StaticLookups};
use serde_json::json;

fn seed_schedule() -> Value {
    json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "schedule-test", "namespace": "team-a"},
        "spec": {
            "backend": {
                "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
                "s3": {
                    "endpoint": "http://10.144.1.224:9000",
                    "bucket": "baas",
                    "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
                    "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"}
                }
            },
            "backup": {"schedule": " 0 1 * * *", "keepJobs": 10, "promURL": "http://10.144.1.224:9000"},
            "check": {"schedule": " 0 0 * * 0", "promURL": "http://10.144.1.224:9000"},
            "prune": {"schedule": " 0 4 * * *", "retention": {"keepLast": 5, "keepDaily": 14}}
        }
    })
}

fn cluster() -> StaticLookups {
    StaticLookups::default()
        .with_secret("team-a", "backup-repo", &["password"])
        .with_secret("team-a", "backup-credentials", &["username", "password"])
}

fn offline(object: &Value) -> Verdict {
    let kind = object_kind(object);
    validate_object(kind, object, ReviewContext::offline("team-a"))
}

fn online(object: &Value, lookups: &StaticLookups) -> Verdict {
    let kind = object_kind(object);
    let ctx = ReviewContext {
        namespace: "team-a",
        lookups: Some(lookups),
    };
    validate_object(kind, object, ctx)
}

#[test]
fn cron_problem_is_the_same_from_memo() {
    let first = cron_problem("61 * * * *");
    assert!(
        first
            .as_deref()
            .is_some_and(|p| p.starts_with("invalid cron expression \"61 * * * *\": "))
    );
    assert_eq!(cron_problem("61 * * * *"), first);
    assert_eq!(cron_problem("@daily"), None);
}

#[test]
fn cron_memo_fed_large_unique_expressions_stays_within_its_budget() {
    // Over the schema's limit (never kept) and just under it (kept, but within the budget).
    for i in 0..50 {
        assert!(cron_problem(&format!("{i} {}", "* ".repeat(5_000))).is_some());
    }
    for i in 0..3_000 {
        assert!(cron_problem(&format!("{i:0>250}")).is_some());
    }
    let bytes = cron_memo_bytes();
    assert!(bytes <= memo::BUDGET_BYTES, "{bytes} bytes");
}

#[test]
fn seed_schedule_is_admitted_without_warnings() {
    let verdict = online(&seed_schedule(), &cluster());
    assert_eq!(verdict, Verdict::default());
}

#[test]
fn schedule_with_six_field_cron_is_denied_with_reason() {
    let mut object = seed_schedule();
    object["spec"]["backup"]["schedule"] = json!("0 0 1 * * *");
    let verdict = offline(&object);
    assert_eq!(verdict.denials.len(), 1, "{verdict:?}");
    assert!(
        verdict.denials[0]
            .starts_with("spec.backup.schedule: invalid cron expression \"0 0 1 * * *\": ")
    );
}

#[test]
fn schedule_with_several_problems_lists_all_in_one_message() {
    let mut object = seed_schedule();
    object["spec"]["backup"]["schedule"] = json!("0 1 * *");
    object["spec"]["backend"]["s3"]["bucket"] = json!("Baas");
    object["spec"]["backend"]["s3"]["accessKeyIDSecretRef"]["name"] = json!("");
    let message = offline(&object).message();
    let sentences: Vec<&str> = message.split("; ").collect();
    assert_eq!(sentences.len(), 3, "{message}");
    assert_eq!(
        sentences[0],
        "spec.backend.s3.bucket: bucket name \"Baas\" may hold only lowercase letters, digits, '.' and '-', found 'B'"
    );
    assert_eq!(
        sentences[1],
        "spec.backend.s3.accessKeyIDSecretRef.name: must not be empty"
    );
    assert!(sentences[2].starts_with(
        "spec.backup.schedule: invalid cron expression \"0 1 * *\": expected 5 fields"
    ));
}

#[test]
fn schedule_without_prune_is_admitted_with_warning() {
    let mut object = seed_schedule();
    object["spec"].as_object_mut().map(|s| s.remove("prune"));
    let verdict = offline(&object);
    assert!(verdict.allowed());
    assert_eq!(verdict.warnings.len(), 1);
    assert!(verdict.warnings[0].starts_with("spec.prune: absent"));
}

#[test]
fn schedule_with_negative_keep_jobs_is_denied() {
    let mut object = seed_schedule();
    object["spec"]["backup"]["keepJobs"] = json!(-1);
    assert_eq!(
        offline(&object).denials,
        ["spec.backup.keepJobs: must not be negative, found -1"]
    );
}

#[test]
fn retention_all_zero_is_denied() {
    let mut object = seed_schedule();
    object["spec"]["prune"]["retention"] = json!({"keepLast": 0, "keepDaily": 0});
    let verdict = offline(&object);
    assert_eq!(verdict.denials.len(), 1);
    assert!(verdict.denials[0].starts_with("spec.prune.retention: keeps no snapshot"));
}

#[test]
fn retention_with_only_tags_is_admitted() {
    let mut object = seed_schedule();
    object["spec"]["prune"]["retention"] = json!({"keepTags": ["monthly"]});
    assert!(offline(&object).allowed());
}

#[test]
fn retention_negative_is_denied_at_the_field() {
    let mut object = seed_schedule();
    object["spec"]["prune"]["retention"] = json!({"keepLast": -3, "keepDaily": 7});
    assert_eq!(
        offline(&object).denials,
        ["spec.prune.retention.keepLast: must not be negative, found -3"]
    );
}

#[test]
fn secret_without_the_key_is_denied() {
    let lookups = StaticLookups::default()
        .with_secret("team-a", "backup-repo", &["pass"])
        .with_secret("team-a", "backup-credentials", &["username", "password"]);
    let verdict = online(&seed_schedule(), &lookups);
    assert_eq!(
        verdict.denials,
        [
            "spec.backend.repoPasswordSecretRef.key: Secret \"backup-repo\" has no key \"password\" (it has: pass)"
        ]
    );
}

#[test]
fn secret_not_yet_created_is_only_a_warning_once() {
    let lookups = StaticLookups::default().with_secret("team-a", "backup-repo", &["password"]);
    let verdict = online(&seed_schedule(), &lookups);
    assert!(verdict.allowed(), "{verdict:?}");
    assert_eq!(verdict.warnings.len(), 1, "{verdict:?}");
    assert!(verdict.warnings[0].starts_with(
        "spec.backend.s3.accessKeyIDSecretRef.name: Secret \"backup-credentials\" does not exist"
    ));
}

#[test]
fn endpoint_without_scheme_or_host_is_denied() {
    assert!(endpoint_problem("objects.example.com").is_some());
    assert!(endpoint_problem("ftp://objects.example.com").is_some());
    assert!(endpoint_problem("http://").is_some());
    assert!(endpoint_problem("").is_some());
    assert_eq!(endpoint_problem("https://objects.example.com"), None);
    assert_eq!(endpoint_problem("http://10.144.1.224:9000"), None);
}

#[test]
fn bucket_names_s3_refuses_are_denied() {
    for bad in [
        "ab",
        "Baas",
        "192.168.1.1",
        "my..bucket",
        "-baas",
        "baas-",
        "b_as",
        &"a".repeat(64),
    ] {
        assert!(bucket_problem(bad).is_some(), "{bad} should be refused");
    }
    for good in ["baas", "my.bucket-1", "123"] {
        assert_eq!(bucket_problem(good), None, "{good} should pass");
    }
}

#[test]
fn secret_ref_with_malformed_name_and_key_is_denied_twice() {
    let mut object = seed_schedule();
    object["spec"]["backend"]["repoPasswordSecretRef"] =
        json!({"name": "Backup_Repo", "key": "pass word"});
    let verdict = offline(&object);
    assert_eq!(verdict.denials.len(), 2, "{verdict:?}");
    assert!(verdict.denials[0].starts_with(
        "spec.backend.repoPasswordSecretRef.name: \"Backup_Repo\" is not a valid name"
    ));
    assert!(verdict.denials[1].starts_with(
        "spec.backend.repoPasswordSecretRef.key: \"pass word\" is not a valid Secret key"
    ));
}

#[test]
fn legacy_password_ref_conflicting_is_denied() {
    let mut object = seed_schedule();
    object["spec"]["backend"]["s3"]["repoPasswordSecretRef"] =
        json!({"name": "other", "key": "password"});
    let verdict = offline(&object);
    assert_eq!(verdict.denials.len(), 1);
    assert!(
        verdict.denials[0].starts_with("spec.backend.s3.repoPasswordSecretRef: conflicts with")
    );
}

#[test]
fn backend_without_password_is_denied() {
    let mut object = seed_schedule();
    object["spec"]["backend"]
        .as_object_mut()
        .map(|b| b.remove("repoPasswordSecretRef"));
    assert_eq!(offline(&object).denials.len(), 1);
}

fn restore(method: Value) -> Value {
    let mut object = seed_schedule();
    object["kind"] = json!("Restore");
    let backend = object["spec"]["backend"].clone();
    object["spec"] = json!({"backend": backend, "restoreMethod": method});
    object
}

#[test]
fn restore_without_method_is_denied() {
    assert_eq!(
        offline(&restore(json!({}))).denials,
        ["spec.restoreMethod: needs exactly one of s3 or pvc, found none"]
    );
}

#[test]
fn restore_with_two_methods_is_denied() {
    let s3 = json!({"endpoint": "http://s3:9000", "bucket": "restore",
        "accessKeyIDSecretRef": {"name": "c", "key": "u"},
        "secretAccessKeySecretRef": {"name": "c", "key": "p"}});
    let verdict = offline(&restore(json!({"s3": s3, "pvc": {"claimName": "data"}})));
    assert_eq!(
        verdict.denials,
        ["spec.restoreMethod: needs exactly one of s3 or pvc, found both"]
    );
}

#[test]
fn restore_into_missing_or_unwritable_pvc_is_denied() {
    let lookups = cluster()
        .with_pvc(
            "team-a",
            PvcInfo {
                name: "ro".into(),
                access_modes: vec!["ReadOnlyMany".into()],
                bound: true,
                ..Default::default()
            },
        )
        .with_pvc(
            "team-a",
            PvcInfo {
                name: "solo".into(),
                access_modes: vec!["ReadWriteOncePod".into()],
                bound: true,
                used_by: vec!["db-0".into()],
                ..Default::default()
            },
        )
        .with_pvc(
            "team-a",
            PvcInfo {
                name: "data".into(),
                access_modes: vec!["ReadWriteOnce".into()],
                bound: true,
                ..Default::default()
            },
        );
    let deny_for =
        |claim: &str| online(&restore(json!({"pvc": {"claimName": claim}})), &lookups).denials;
    assert!(deny_for("missing")[0].contains("does not exist"));
    assert!(deny_for("ro")[0].contains("ReadOnlyMany"));
    assert!(deny_for("solo")[0].contains("in use by pod db-0"));
    assert!(deny_for("data").is_empty());
}

#[test]
fn backup_warns_about_pvcs_it_cannot_read() {
    let lookups = cluster()
        .with_pvc(
            "team-a",
            PvcInfo {
                name: "pending".into(),
                access_modes: vec!["ReadWriteOnce".into()],
                ..Default::default()
            },
        )
        .with_pvc(
            "team-a",
            PvcInfo {
                name: "solo".into(),
                access_modes: vec!["ReadWriteOncePod".into()],
                bound: true,
                ..Default::default()
            },
        )
        .with_pvc(
            "team-a",
            PvcInfo {
                name: "skipped".into(),
                excluded: true,
                ..Default::default()
            },
        );
    let mut object = seed_schedule();
    object["kind"] = json!("Backup");
    let backend = object["spec"]["backend"].clone();
    object["spec"] = json!({"backend": backend});
    let verdict = online(&object, &lookups);
    assert!(verdict.allowed());
    assert_eq!(verdict.warnings.len(), 2, "{verdict:?}");
    assert!(verdict.warnings[0].starts_with("persistentvolumeclaim/pending: is not bound"));
    assert!(verdict.warnings[1].starts_with("persistentvolumeclaim/solo: is ReadWriteOncePod"));
}

#[test]
fn spec_of_wrong_shape_is_denied_with_field_path() {
    let mut object = seed_schedule();
    object["spec"]["backup"]["keepJobs"] = json!("ten");
    assert_eq!(
        offline(&object).denials,
        ["spec.backup.keepJobs: must be an integer"]
    );
}

#[test]
fn run_update_of_spec_is_denied_but_metadata_passes() {
    let old = json!({"metadata": {"labels": {}}, "spec": {"a": 1}});
    let relabelled = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"a": 1}});
    let changed = json!({"metadata": {}, "spec": {"a": 2}});
    assert_eq!(validate_run_update(Kind::Backup, &old, &relabelled), None);
    assert!(
        validate_run_update(Kind::Backup, &old, &changed)
            .is_some_and(|m| m.starts_with("spec: a Backup is a one-shot run"))
    );
}

#[test]
fn endpoint_with_user_info_is_denied_without_echoing_it() {
    for endpoint in [
        "https://backup:hunter2@objects.example.com",
        "https://backup@objects.example.com/",
        "backup:hunter2@objects.example.com",
        "ftp://backup:hunter2@objects.example.com",
        "https://backup:hunter2@objects.example.com?region=x",
        "https://backup:hun ter2@objects.example.com",
    ] {
        let problem = endpoint_problem(endpoint);
        assert_eq!(
            problem.as_deref(),
            Some(
                "must not hold user info: credentials belong in Secrets, referenced by accessKeyIDSecretRef and secretAccessKeySecretRef"
            ),
            "{endpoint}"
        );
    }
    let mut object = seed_schedule();
    object["spec"]["backend"]["s3"]["endpoint"] =
        json!("https://backup:hunter2@objects.example.com");
    let message = offline(&object).message();
    assert!(
        message.starts_with("spec.backend.s3.endpoint: must not hold user info"),
        "{message}"
    );
    assert!(
        !message.contains("hunter2") && !message.contains("backup:"),
        "{message}"
    );
    // An @ in the path is no user info.
    assert_eq!(endpoint_problem("https://objects.example.com/@team"), None);
}

#[test]
fn restore_path_that_can_only_go_wrong_is_denied() {
    let with_path = |path: &str| {
        let mut object = restore(json!({"pvc": {"claimName": "data"}}));
        object["spec"]["path"] = json!(path);
        offline(&object).denials
    };
    assert_eq!(
        with_path("/data/../etc"),
        [
            "spec.path: \"/data/../etc\" must not have \"..\" segments; name the path as the snapshot lists it, such as /data/mypvc"
        ]
    );
    assert_eq!(
        with_path("/data//mypvc"),
        [
            "spec.path: \"/data//mypvc\" is not clean (empty or \".\" segments); write \"/data/mypvc\""
        ]
    );
    assert_eq!(
        with_path("/data/mypvc/."),
        [
            "spec.path: \"/data/mypvc/.\" is not clean (empty or \".\" segments); write \"/data/mypvc\""
        ]
    );
    assert_eq!(
        with_path("/./data/mypvc"),
        [
            "spec.path: \"/./data/mypvc\" is not clean (empty or \".\" segments); write \"/data/mypvc\""
        ]
    );
    assert_eq!(
        with_path("./data"),
        ["spec.path: \"./data\" must be an absolute path inside the snapshot, such as /data/mypvc"]
    );
    // The agent drops trailing slashes, so they cannot go wrong.
    for fine in [
        "/",
        "/data/mypvc",
        "/data/mypvc/",
        "/data/my..pvc",
        "/data/.hidden",
    ] {
        assert_eq!(with_path(fine), Vec::<String>::new(), "{fine}");
    }
}

fn object_kind(object: &Value) -> Kind {
    object["kind"]
        .as_str()
        .and_then(Kind::from_name)
        .expect("a test object of one of our kinds")
}
