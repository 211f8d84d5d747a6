//! The run kinds (Backup, Check, Prune, Restore, Verify) as the controllers see them: one
//! trait, so the caches, the watches and the run reconciler serve all five with one body.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{
    Backend, Backup, Check, Operation, Prune, Restore, RestoreSpec, Retention, RunStatus, Verify,
    VerifySpec,
};

/// What the reconciler needs from each run kind.
pub trait RunKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The operation this kind runs.
    const OP: Operation;
    /// The repository.
    fn backend(&self) -> &Backend;
    /// The status, if any was written.
    fn run_status(&self) -> Option<&RunStatus>;
    /// The Pushgateway URL.
    fn prom_url(&self) -> Option<&str>;
    /// Drops the spec and all of the status but state and times, once the run has finished.
    fn forget_if_finished(&mut self);
    /// The Jobs this run needs.
    fn job_request(&self) -> JobRequest<'_>;
}

/// The Jobs a run needs, beyond its repository and Pushgateway URL: each run kind names its
/// own, so the reconciler's `match` over them is checked by the compiler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JobRequest<'a> {
    /// Backup Jobs, planned from the PVCs and pods of the run's namespace.
    Backup,
    /// One check Job.
    Check,
    /// One prune Job, with the run's retention.
    Prune(Option<&'a Retention>),
    /// One restore Job, on the node that mounts the target PVC, if one does.
    Restore(&'a RestoreSpec),
    /// One verification Job, with the application check if the run has one.
    Verify(&'a VerifySpec),
}

/// The five run kinds share their spec and status layout, so one body serves them all.
macro_rules! impl_run_kind {
    ($($kind:ident => $op:ident, $request:ident),+ $(,)?) => {$(
        impl RunKind for $kind {
            const OP: Operation = Operation::$op;
            fn backend(&self) -> &Backend {
                &self.spec.backend
            }
            fn run_status(&self) -> Option<&RunStatus> {
                self.status.as_ref()
            }
            fn prom_url(&self) -> Option<&str> {
                self.spec.prom_url.as_deref()
            }
            fn forget_if_finished(&mut self) {
                if let Some(status) = self.status.as_mut().filter(|s| s.is_finished()) {
                    *status = status.outline();
                    self.spec = Default::default();
                }
            }
            fn job_request(&self) -> JobRequest<'_> {
                $request(self)
            }
        }
    )+};
}

impl_run_kind!(
    Backup => Backup, backup_request,
    Check => Check, check_request,
    Prune => Prune, prune_request,
    Restore => Restore, restore_request,
    Verify => Verify, verify_request,
);

fn backup_request(_: &Backup) -> JobRequest<'_> {
    JobRequest::Backup
}

fn check_request(_: &Check) -> JobRequest<'_> {
    JobRequest::Check
}

fn prune_request(prune: &Prune) -> JobRequest<'_> {
    JobRequest::Prune(prune.spec.retention.as_ref())
}

fn restore_request(restore: &Restore) -> JobRequest<'_> {
    JobRequest::Restore(&restore.spec)
}

fn verify_request(verify: &Verify) -> JobRequest<'_> {
    JobRequest::Verify(&verify.spec)
}
