//! What `kubectl apply` tells the user: denials with field paths, and the defaults the
//! mutating webhook injects into the seed's Schedule.

use crate::fixtures::seed_schedule;
use crate::harness::{Namespace, rewrite};

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn schedule_with_six_field_cron_is_denied_naming_the_field() {
    let ns = Namespace::create("deny");
    ns.create_seed_secrets();
    let six_fields = rewrite(
        &seed_schedule(&ns, &ns.bucket("deny"), " * * * * *", 10),
        &[("schedule: ' * * * * *'", "schedule: '0 0 1 * * *'")],
    );

    for dry_run in [&[][..], &["--dry-run=server"][..]] {
        let run = ns.apply_with(&six_fields, dry_run);
        assert!(!run.ok, "a six-field cron was admitted ({dry_run:?})");
        assert!(
            run.stderr.contains("denied the request: ")
                && run.stderr.contains("spec.backup.schedule: ")
                && run.stderr.contains("0 0 1 * * *"),
            "kubectl {dry_run:?} did not name spec.backup.schedule and the expression: {}",
            run.stderr
        );
        assert!(ns.get("schedule", "schedule-test").is_none());
    }

    // two problems in one object: one answer names both
    let two_problems = rewrite(
        &seed_schedule(&ns, "Bad_Bucket", " * * * * *", 10),
        &[(
            "accessKeyIDSecretRef:\n        name: backup-credentials",
            "accessKeyIDSecretRef:\n        name: Not_A_Name!",
        )],
    );
    let run = ns.apply_with(&two_problems, &[]);
    assert!(!run.ok, "a bad bucket and a bad secret ref were admitted");
    let denials: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("denied the request"))
        .collect();
    assert_eq!(denials.len(), 1, "expected one denial: {}", run.stderr);
    for field in [
        "spec.backend.s3.bucket: ",
        "spec.backend.s3.accessKeyIDSecretRef.name: ",
    ] {
        assert!(
            denials[0].contains(field),
            "{field} missing from {}",
            denials[0]
        );
    }
    assert!(ns.get("schedule", "schedule-test").is_none());
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn seed_schedule_is_accepted_with_trimmed_crons_and_defaults() {
    let ns = Namespace::create("seed");
    ns.create_seed_secrets();
    let schedule = seed_schedule(&ns, &ns.bucket("seed"), " * * * * *", 10);

    let dry = ns.apply_with(&schedule, &["--dry-run=server"]);
    assert!(
        dry.ok,
        "dry run refused the seed's Schedule: {}",
        dry.stderr
    );
    assert!(
        dry.stdout.contains("(server dry run)"),
        "unexpected dry-run output: {}",
        dry.stdout
    );
    assert!(
        ns.get("schedule", "schedule-test").is_none(),
        "a server-side dry run stored the Schedule"
    );

    let warnings = ns.apply(&schedule);
    assert!(
        !warnings.contains("Warning:"),
        "the seed's Schedule with its Secrets in place should apply without warnings: {warnings}"
    );
    let stored = ns
        .get("schedule", "schedule-test")
        .expect("the Schedule is stored");
    let spec = &stored["spec"];
    assert_eq!(spec["backup"]["schedule"], "* * * * *");
    assert_eq!(spec["check"]["schedule"], "0 0 * * 0");
    assert_eq!(spec["prune"]["schedule"], "0 4 * * *");
    assert_eq!(spec["backup"]["keepJobs"], 10);
    assert_eq!(spec["check"]["keepJobs"], 10, "keepJobs default for check");
    assert_eq!(spec["prune"]["keepJobs"], 10, "keepJobs default for prune");
    assert_eq!(spec["prune"]["retention"]["keepLast"], 5);
    assert_eq!(spec["prune"]["retention"]["keepDaily"], 14);
    assert_eq!(
        spec["backend"]["s3"]["endpoint"],
        ns.cluster().s3_endpoint()
    );

    // `kubectl get schedules` shows it with its columns
    let table = ns.kubectl_ok(&["get", "schedules"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    for column in [
        "NAME",
        "BACKUP",
        "LAST BACKUP",
        "NEXT BACKUP",
        "LAST STATE",
        "READY",
        "AGE",
    ] {
        assert!(header.contains(&column), "no {column} column: {table}");
    }
    let row = lines
        .find(|l| l.starts_with("schedule-test "))
        .unwrap_or_else(|| panic!("no row for schedule-test: {table}"));
    // the cron, trimmed by the webhook
    assert!(row.contains("  * * * * *  "), "{table}");
}
