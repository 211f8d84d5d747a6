//! The run kinds (Backup, Check, Prune, Restore) as the controllers see them: one trait, so
//! the caches, the watches and the run reconciler serve all four with one body.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{Backend, Backup, Check, Operation, Prune, Restore, RunStatus};

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
}

/// The four run kinds share their spec and status layout, so one body serves them all.
macro_rules! impl_run_kind {
    ($($kind:ident => $op:ident),+ $(,)?) => {$(
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
        }
    )+};
}

impl_run_kind!(Backup => Backup, Check => Check, Prune => Prune, Restore => Restore);
