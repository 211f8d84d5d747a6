//! The agent placement flags as the chart sets them (JSON in environment variables): they
//! reach the Job settings, and a malformed value stops the operator at start-up naming its
//! flag.

use baas::cli::{Cli, Command};
use clap::Parser;

fn operator(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut all = vec!["baas", "operator", "--tls-cert", "c", "--tls-key", "k"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all)
}

#[test]
fn placement_flags_in_json_reach_the_job_settings() {
    let cli = operator(&[
        "--agent-node-selector",
        r#"{"pool":"backup"}"#,
        "--agent-tolerations",
        r#"[{"key":"backup","operator":"Exists"},{"key":"spot","operator":"Exists"}]"#,
        "--agent-resources",
        r#"{"requests":{"cpu":"100m"},"limits":{"memory":"1Gi"}}"#,
    ])
    .expect("valid flags");
    let Command::Operator(args) = cli.command else {
        panic!("not the operator")
    };
    let placement = args.agent_placement.placement();
    assert_eq!(placement.node_selector["pool"], "backup");
    assert_eq!(placement.tolerations.len(), 2);
    assert!(placement.affinity.is_none());
    let limits = placement
        .resources
        .and_then(|r| r.limits)
        .expect("limits set");
    assert_eq!(limits["memory"].0, "1Gi");
}

#[test]
fn malformed_placement_json_is_refused_naming_the_flag() {
    let error = operator(&["--agent-tolerations", r#"{"key":"backup"}"#])
        .expect_err("an object is no list of tolerations");
    let message = error.to_string();
    assert!(message.contains("--agent-tolerations"), "{message}");
    assert!(message.contains("not the expected JSON"), "{message}");
}
