//! The kinds of the API and the operations a run can be, as enums: every `match` over them is
//! checked by the compiler, so a new kind or operation cannot be folded into another by a
//! catch-all arm. Metrics labels, Job labels and `baas agent <op>` take their names from here.

use std::fmt;

/// The six kinds of `backup.appuio.ch/v1alpha1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Cron schedules for backup, check and prune of one repository.
    Schedule,
    /// One `restic backup` run.
    Backup,
    /// One `restic check` run.
    Check,
    /// One `restic forget --prune` run.
    Prune,
    /// One restore of a snapshot to S3 or a PVC.
    Restore,
    /// One verification that the newest snapshots of a namespace restore.
    Verify,
}

impl Kind {
    /// Every kind, in the order users meet them.
    pub const ALL: [Kind; 6] = [
        Kind::Schedule,
        Kind::Backup,
        Kind::Check,
        Kind::Prune,
        Kind::Restore,
        Kind::Verify,
    ];

    /// The kind's name, as in `kind:` of a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Schedule => "Schedule",
            Kind::Backup => "Backup",
            Kind::Check => "Check",
            Kind::Prune => "Prune",
            Kind::Restore => "Restore",
            Kind::Verify => "Verify",
        }
    }

    /// The kind named `name` exactly, as an admission review or a manifest spells it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The operation of a run kind; `None` for a Schedule, which is not a run.
    pub fn operation(self) -> Option<Operation> {
        match self {
            Kind::Schedule => None,
            Kind::Backup => Some(Operation::Backup),
            Kind::Check => Some(Operation::Check),
            Kind::Prune => Some(Operation::Prune),
            Kind::Restore => Some(Operation::Restore),
            Kind::Verify => Some(Operation::Verify),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The five operations a run can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `restic backup` of PVCs and backup commands.
    Backup,
    /// `restic check`.
    Check,
    /// `restic forget --prune`.
    Prune,
    /// `restic restore` or `restic dump`.
    Restore,
    /// `restic restore --verify` of the newest snapshots into scratch space.
    Verify,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 5] = [
        Operation::Backup,
        Operation::Check,
        Operation::Prune,
        Operation::Restore,
        Operation::Verify,
    ];

    /// The operations a Schedule runs on its cron schedules, in the order of its spec.
    pub const SCHEDULED: [Operation; 4] = [
        Operation::Backup,
        Operation::Check,
        Operation::Prune,
        Operation::Verify,
    ];

    /// Lowercase name, as in labels and `baas agent <op>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Check => "check",
            Operation::Prune => "prune",
            Operation::Restore => "restore",
            Operation::Verify => "verify",
        }
    }

    /// The operation a label value names, as [`Operation::as_str`] writes it.
    pub fn from_label(label: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == label)
    }

    /// The kind of the run object.
    pub fn kind(self) -> Kind {
        match self {
            Operation::Backup => Kind::Backup,
            Operation::Check => Kind::Check,
            Operation::Prune => Kind::Prune,
            Operation::Restore => Kind::Restore,
            Operation::Verify => Kind::Verify,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_name_and_no_other_name_is() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::from_name("backup"), None);
        assert_eq!(Kind::from_name("Pod"), None);
    }

    #[test]
    fn every_run_kind_and_its_operation_name_each_other() {
        for kind in Kind::ALL {
            match kind.operation() {
                Some(op) => assert_eq!(op.kind(), kind),
                None => assert_eq!(kind, Kind::Schedule),
            }
        }
    }
}
