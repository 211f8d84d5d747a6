//! The scratch directory a verification restores into. It belongs to the run: the operator
//! gives the Job an empty volume, an application check reads the files after the agent, so
//! the agent never deletes them at the end. It only refuses to restore into a directory that
//! already holds something of another run, which would mix two runs' files and make the
//! counts wrong; what an earlier attempt of the same run left (a restarted container) is
//! cleared first.

use std::path::Path;

use crate::{Error, Result};

/// The file that names the run a scratch directory belongs to.
pub const MARKER: &str = ".baas-verify";

/// Makes `dir` ready for run `run`: creates it, clears what an earlier attempt of the same
/// run left, refuses anything else, and marks it as the run's.
pub fn prepare(dir: &Path, run: &str) -> Result<()> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let marker = dir.join(MARKER);
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<std::io::Result<_>>()
        .map_err(io(dir))?;
    if !entries.is_empty() {
        let owner = std::fs::read_to_string(&marker).ok();
        if owner.as_deref().map(str::trim) != Some(run) {
            return Err(Error::InvalidSpec(format!(
                "the verify directory {} is not empty and was not filled by run {run}; \
                 refusing to mix the files of two runs (give the Job an empty volume)",
                dir.display()
            )));
        }
        for entry in entries.iter().filter(|e| e.file_name() != MARKER) {
            let path = entry.path();
            let removed = if entry.file_type().map_err(io(&path))?.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io(&path))?;
        }
    }
    std::fs::write(&marker, format!("{run}\n")).map_err(io(&marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_directory_is_marked_as_the_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let scratch = dir.path().join("verify");
        prepare(&scratch, "nightly-verify-1").expect("prepared");
        assert_eq!(
            std::fs::read_to_string(scratch.join(MARKER)).expect("marker"),
            "nightly-verify-1\n"
        );
    }

    #[test]
    fn directory_of_an_earlier_attempt_of_the_same_run_is_cleared() {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path(), "run-1").expect("prepared");
        std::fs::create_dir_all(dir.path().join("data/app")).expect("mkdir");
        std::fs::write(dir.path().join("data/app/half"), "x").expect("write");
        prepare(dir.path(), "run-1").expect("prepared again");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, [MARKER]);
    }

    #[test]
    fn directory_with_files_of_another_run_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("foreign"), "x").expect("write");
        let error = prepare(dir.path(), "run-1").expect_err("refused");
        assert!(error.to_string().contains("not empty"), "{error}");
        assert!(dir.path().join("foreign").exists());
        prepare(dir.path(), "run-2").expect_err("still refused");
    }
}
