//! `baas validate` as a CI pipeline runs it: exit status, denial lines and warning lines.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn baas_validate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baas"))
        .arg("validate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BAAS_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baas runs");
    let mut input = child.stdin.take().expect("a stdin pipe");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("stdin is writable");
    drop(input);
    child.wait_with_output().expect("baas finishes")
}

#[test]
fn validate_of_shipped_examples_exits_0() {
    let output = baas_validate(&["-f", "manifests/examples"], None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().all(|l| l.starts_with("Warning: ")),
        "only warnings: {stdout}"
    );
}

#[test]
fn validate_of_broken_schedule_exits_1_with_every_problem() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/examples/schedule-seed.yaml"
    ))
    .expect("the seed example exists");
    let broken = manifest
        .replace("bucket: baas", "bucket: Baas")
        .replace("' 0 1 * * *'", "'0 0 1 * * *'");
    assert_ne!(broken, manifest, "the example still has the seed's values");
    let output = baas_validate(&["-f", "-"], Some(&broken));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let denials: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("Warning: "))
        .collect();
    assert_eq!(denials.len(), 2, "{stdout}");
    assert!(denials[0].starts_with("-: Schedule/schedule-test: spec.backend.s3.bucket: "));
    assert!(denials[1].starts_with(
        "-: Schedule/schedule-test: spec.backup.schedule: invalid cron expression \"0 0 1 * * *\""
    ));
}

#[test]
fn validate_of_unreadable_input_exits_2() {
    let missing = baas_validate(&["-f", "does/not/exist.yaml"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does/not/exist.yaml"));
    let invalid = baas_validate(&["-f", "-"], Some("kind: [unclosed\n"));
    assert_eq!(invalid.status.code(), Some(2));
}
