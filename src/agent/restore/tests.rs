use std::path::Path;
use std::process::Stdio;

use tokio::sync::mpsc;

use super::to_s3::{append_tree, first_cause, write_archive};
use super::*;
use crate::agent::s3;

fn snapshot(paths: &[&str]) -> Snapshot {
    Snapshot {
        id: "a".repeat(64),
        short_id: "aaaaaaaa".into(),
        time: "2026-01-01T00:00:00Z".into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        hostname: "ns".into(),
        tags: vec![],
        summary: None,
    }
}

fn at(mut s: Snapshot, time: &str) -> Snapshot {
    s.time = time.into();
    s.short_id = time.into();
    s
}

#[test]
fn claim_without_path_takes_its_directory_from_the_newest_snapshot_holding_it() {
    let older = at(snapshot(&["/data/app", "/data/other"]), "1");
    let newer = at(snapshot(&["/data/other"]), "2");
    let wanted = Wanted::new(None, Some("app"));
    assert_eq!(wanted, Wanted::ClaimOrWhole("/data/app".into()));
    let (chosen, path) = choose(&[older, newer.clone()], &wanted).expect("a snapshot");
    assert_eq!(
        (chosen.short_id.as_str(), path.as_str()),
        ("1", "/data/app")
    );
    let (chosen, path) = choose(&[newer], &Wanted::new(None, Some("app"))).expect("a snapshot");
    assert_eq!((chosen.short_id.as_str(), path.as_str()), ("2", "/"));
}

#[test]
fn given_path_wins_over_the_claim_and_must_be_held() {
    let s = snapshot(&["/data/other"]);
    let wanted = Wanted::new(Some("data/app/"), Some("other"));
    assert_eq!(wanted, Wanted::Path("/data/app".into()));
    assert_eq!(choose(std::slice::from_ref(&s), &wanted), None);
    assert_eq!(
        choose(&[s], &Wanted::new(None, None)).map(|(_, p)| p),
        Some("/".into())
    );
    assert_eq!(choose(&[], &Wanted::new(None, Some("app"))), None);
}

#[test]
fn path_is_normalized_to_restics_form() {
    assert_eq!(normalize_path("data/pvc/"), "/data/pvc");
    assert_eq!(normalize_path("/"), "/");
    assert_eq!(normalize_path(""), "/");
}

#[test]
fn snapshot_holds_its_paths_their_subdirectories_and_parents() {
    let s = snapshot(&["/data/app", "/data/db"]);
    assert!(holds(&s, "/data/app"));
    assert!(holds(&s, "/data/app/uploads"));
    assert!(holds(&s, "/data"));
    assert!(!holds(&s, "/data/application"));
    assert!(!holds(&s, "/ns-db-0-mysql"));
}

#[test]
fn directory_path_is_restored_as_the_snapshots_subfolder() {
    let args = restore_args("abc", "/data/app", true, Path::new("/restore/app"));
    assert_eq!(
        args,
        ["restore", "abc:/data/app", "--target", "/restore/app"]
    );
    let whole = restore_args("abc", "/", true, Path::new("/restore/app"));
    assert_eq!(whole, ["restore", "abc", "--target", "/restore/app"]);
}

#[test]
fn file_path_is_restored_by_name_from_its_parent() {
    let dump = restore_args("abc", "/shop-db-0-mysql", false, Path::new("/r"));
    assert_eq!(
        dump,
        [
            "restore",
            "abc:/",
            "--include",
            "/shop-db-0-mysql",
            "--target",
            "/r"
        ]
    );
    let nested = restore_args("abc", "/data/app/a*[1]?.txt", false, Path::new("/r"));
    assert_eq!(
        nested,
        [
            "restore",
            "abc:/data/app",
            "--include",
            r"/a\*\[1]\?.txt",
            "--target",
            "/r"
        ]
    );
}

#[test]
fn tree_entries_are_renamed_below_the_restored_path() {
    let mut source = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("data/pvc/a", "A"),
        ("data/pvc/sub/b", "BB"),
        ("data/other/c", "C"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o640);
        header.set_mtime(1_700_000_000);
        builder_append(&mut source, &mut header, name, data);
    }
    let source = source.into_inner().expect("in memory");
    let mut out = tar::Builder::new(Vec::new());
    let counts = append_tree(&mut out, "/data/pvc", &mut source.as_slice()).expect("valid tar");
    assert_eq!(counts, (2, 3));
    let out = out.into_inner().expect("in memory");
    let mut archive = tar::Archive::new(out.as_slice());
    let names: Vec<(String, u32, u64)> = archive
        .entries()
        .expect("valid tar")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.path().expect("path").display().to_string(),
                e.header().mode().expect("mode"),
                e.header().mtime().expect("mtime"),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_string(), 0o640, 1_700_000_000),
            ("sub/b".to_string(), 0o640, 1_700_000_000)
        ]
    );
}

/// Runs `write_archive` on `script` (a stand-in for `restic dump`) and collects the
/// uploaded bytes.
fn archive_of(script: &str) -> (Result<(u64, u64)>, Vec<u8>) {
    let (tx, mut rx) = mpsc::channel(1);
    let uploaded = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            if let s3::Chunk::Part(part) = chunk {
                bytes.extend(part);
            }
        }
        bytes
    });
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let result = write_archive(command, "/", None, tx);
    (result, uploaded.join().expect("collector"))
}

#[test]
fn archive_end_written_late_is_read_before_restic_is_waited_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut source = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    builder_append(&mut source, &mut header, "shop-db", "data");
    // tar stops at the first zero block; restic writes the second one in its own write,
    // which on a loaded machine comes after the reader has finished.
    let mut first = source.into_inner().expect("in memory");
    first.extend([0u8; 512]);
    std::fs::write(dir.path().join("first"), &first).expect("write");
    let script = format!(
        "cat {0}/first && sleep 0.3 && head -c 512 /dev/zero",
        dir.path().display()
    );
    let (result, uploaded) = archive_of(&script);
    assert_eq!(result.expect("the dump succeeds"), (1, 4));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(uploaded.as_slice()));
    let names: Vec<String> = archive
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["shop-db"]);
}

#[test]
fn failed_dump_names_restics_error() {
    let (result, _) = archive_of("echo 'Fatal: no snapshot found' >&2; exit 1");
    let message = result.expect_err("the dump fails").to_string();
    assert!(message.contains("no snapshot found"), "{message}");
    assert!(message.contains("exit code 1"), "{message}");
}

fn builder_append(
    builder: &mut tar::Builder<Vec<u8>>,
    header: &mut tar::Header,
    name: &str,
    data: &str,
) {
    builder
        .append_data(header, name, data.as_bytes())
        .expect("in memory");
}

#[test]
fn failed_s3_restore_reports_the_side_that_failed_first() {
    let cause = |produced: Result<(u64, u64)>, uploaded: Result<u64>| {
        first_cause(produced, uploaded).map_err(|e| e.to_string())
    };
    let restic_failed = || Err(Error::Restic("snapshot not found".into()));
    let upload_stopped = || Err(Error::Restic("the upload stopped".into()));
    let stalled = "S3 part 2: no data moved for 60s (after 5 attempts)";
    assert_eq!(
        cause(restic_failed(), Err(Error::Http(s3::INCOMPLETE.into()))),
        Err(Error::Restic("snapshot not found".into()).to_string())
    );
    assert_eq!(
        cause(upload_stopped(), Err(Error::Http(stalled.into()))),
        Err(Error::Http(stalled.into()).to_string())
    );
    assert_eq!(cause(Ok((1, 2)), Ok(3)), Ok(((1, 2), 3)));
}
