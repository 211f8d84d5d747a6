//! End-to-end tests of the seed's workflow against the local cluster: the real API server
//! with our webhook registered, the operator installed from manifests/, Jobs run by real
//! kubelets and containerd, the S3 server, the
//! Pushgateway and plain `restic`.
//!
//! They are ignored by a plain `cargo test`; run them after `scripts/cluster up` with
//! `eval "$(scripts/cluster env)"; cargo test --test e2e -- --ignored --test-threads=1`
//! (`scripts/test` does all of this). One test kills and restarts the operator, so they
//! must not run concurrently.

#[path = "e2e/admission.rs"]
mod admission;
#[path = "e2e/backup.rs"]
mod backup;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/fixtures.rs"]
mod fixtures;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/leader.rs"]
mod leader;
#[path = "e2e/manifests.rs"]
mod manifests;
#[path = "e2e/plugin.rs"]
mod plugin;
#[path = "e2e/prune.rs"]
mod prune;
#[path = "e2e/restore.rs"]
mod restore;
#[path = "e2e/schedule.rs"]
mod schedule;
#[path = "e2e/secrets.rs"]
mod secrets;
#[path = "e2e/seed.rs"]
mod seed;
#[path = "e2e/verify.rs"]
mod verify;
