//! The shipped alerts (`manifests/alerts.yaml`) evaluated by Prometheus' own rule engine
//! (`promtool test rules`) against series shaped as the operator exports them.

use std::path::PathBuf;
use std::process::Command;

/// The rule groups of the PrometheusRule: its `spec`, which is a Prometheus rule file.
fn rule_file() -> String {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/alerts.yaml"),
    )
    .expect("read alerts.yaml");
    let mut lines = manifest.lines().skip_while(|l| *l != "spec:");
    lines.next().expect("alerts.yaml has a spec");
    lines
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let hint = "promtool is missing: run scripts/setup";
        assert!(std::env::var_os("CI").is_none(), "{hint}");
        eprintln!("skipping: {hint}");
    }
    found
}

/// Runs `promtool test rules` with `tests` (the YAML of its `tests:` list).
fn promtool_test(tests: &str) -> std::process::Output {
    let promtool = promtool().expect("promtool");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rules.yaml"), rule_file()).expect("write rules");
    let unit = format!("rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n{tests}");
    std::fs::write(dir.path().join("test.yaml"), unit).expect("write test");
    Command::new(promtool)
        .args(["test", "rules", "test.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool runs")
}

fn assert_passes(tests: &str) {
    let out = promtool_test(tests);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_rules_are_valid_prometheus_rules() {
    let Some(_) = promtool() else { return };
    // An empty test list still loads and checks every rule.
    assert_passes("  []\n");
}

#[test]
fn schedule_that_never_succeeded_alerts_a_day_after_its_creation() {
    let Some(_) = promtool() else { return };
    // Created at time 0, never succeeded, one sample a minute as Prometheus scrapes: quiet at
    // 24 h, firing once 25 h and the 15 m of `for` have passed.
    assert_passes(
        r#"  - interval: 1m
    input_series:
      - series: 'baas_schedule_created_timestamp_seconds{namespace="shop",schedule="nightly"}'
        values: '0x1700'
    alert_rule_test:
      - eval_time: 24h
        alertname: BaasBackupTooOld
        exp_alerts: []
      - eval_time: 27h
        alertname: BaasBackupTooOld
        exp_alerts:
          - exp_labels: {severity: warning, namespace: shop, schedule: nightly}
            exp_annotations:
              summary: "No successful backup of shop/nightly for over 25 hours"
              description: "kubectl -n shop get backups shows the last runs and why they failed."
"#,
    );
}

#[test]
fn schedule_that_succeeded_recently_is_quiet_even_when_old() {
    let Some(_) = promtool() else { return };
    // Created at 0, last success at 20 h (72000 s), one sample a minute as Prometheus scrapes:
    // at 27 h the backup is 7 hours old.
    assert_passes(
        r#"  - interval: 1m
    input_series:
      - series: 'baas_schedule_created_timestamp_seconds{namespace="shop",schedule="nightly"}'
        values: '0x1700'
      - series: 'baas_last_successful_backup_timestamp_seconds{namespace="shop",schedule="nightly"}'
        values: '_x1199 72000x500'
    alert_rule_test:
      - eval_time: 27h
        alertname: BaasBackupTooOld
        exp_alerts: []
"#,
    );
}

#[test]
fn verification_older_than_the_schedules_own_bound_alerts_and_a_fresh_one_is_quiet() {
    let Some(_) = promtool() else { return };
    // Two Schedules created at 0 with a bound of 2 h. "fresh" last verified a snapshot taken
    // at 3 h (10800 s); "stale" verified one taken at 10 minutes and none since. At 4 h the
    // stale one's newest verified snapshot is 3 h 50 m old: over its bound, and over the 15 m
    // of `for`. A Schedule without `verify` (no bound) never alerts.
    assert_passes(
        r#"  - interval: 1m
    input_series:
      - series: 'baas_schedule_created_timestamp_seconds{namespace="shop",schedule="fresh"}'
        values: '0x300'
      - series: 'baas_schedule_created_timestamp_seconds{namespace="shop",schedule="stale"}'
        values: '0x300'
      - series: 'baas_schedule_created_timestamp_seconds{namespace="shop",schedule="plain"}'
        values: '0x300'
      - series: 'baas_verify_max_age_seconds{namespace="shop",schedule="fresh"}'
        values: '7200x300'
      - series: 'baas_verify_max_age_seconds{namespace="shop",schedule="stale"}'
        values: '7200x300'
      - series: 'baas_last_verified_backup_timestamp_seconds{namespace="shop",schedule="fresh"}'
        values: '_x180 10800x120'
      - series: 'baas_last_verified_backup_timestamp_seconds{namespace="shop",schedule="stale"}'
        values: '600x300'
    alert_rule_test:
      - eval_time: 1h
        alertname: BaasVerifiedBackupTooOld
        exp_alerts: []
      - eval_time: 4h
        alertname: BaasVerifiedBackupTooOld
        exp_alerts:
          - exp_labels: {severity: critical, namespace: shop, schedule: stale}
            exp_annotations:
              summary: "No snapshot of shop/stale newer than its verify.maxAge has been proven to restore"
              description: "kubectl -n shop get verifies shows the last verifications; status.verified and status.errors name each snapshot and what failed (docs/verify.md)."
"#,
    );
}

#[test]
fn schedule_whose_verification_never_succeeded_alerts_once_its_bound_has_passed() {
    let Some(_) = promtool() else { return };
    assert_passes(
        r#"  - interval: 1m
    input_series:
      - series: 'baas_schedule_created_timestamp_seconds{namespace="shop",schedule="new"}'
        values: '0x300'
      - series: 'baas_verify_max_age_seconds{namespace="shop",schedule="new"}'
        values: '3600x300'
    alert_rule_test:
      - eval_time: 50m
        alertname: BaasVerifiedBackupTooOld
        exp_alerts: []
      - eval_time: 90m
        alertname: BaasVerifiedBackupTooOld
        exp_alerts:
          - exp_labels: {severity: critical, namespace: shop, schedule: new}
            exp_annotations:
              summary: "No snapshot of shop/new newer than its verify.maxAge has been proven to restore"
              description: "kubectl -n shop get verifies shows the last verifications; status.verified and status.errors name each snapshot and what failed (docs/verify.md)."
"#,
    );
}
