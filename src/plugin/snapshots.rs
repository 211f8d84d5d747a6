//! `kubectl baas snapshots`: the namespace's snapshots (restic host = namespace) in its
//! Schedule's repository, listed by the `restic` on the user's machine with the credentials
//! the user may read. restic gets them through its environment only.

use std::io::ErrorKind;
use std::process::Stdio;

use serde::Deserialize;
use serde_json::Value;

use super::args::{GlobalArgs, OutputFormat, SnapshotsArgs};
use super::connect::Connection;
use super::error::{PluginError, PluginResult};
use super::output::{NONE, Table, age, human_bytes, short_id, structured};
use super::repository::{credentials, schedule};

/// Variables of the user's shell that would make restic open another repository or take
/// other keys than the Schedule's.
const FOREIGN_ENV: [&str; 9] = [
    "RESTIC_REPOSITORY_FILE",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
    "RESTIC_FROM_REPOSITORY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// One snapshot in `restic snapshots --json`.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Full ID.
    pub id: String,
    /// RFC 3339.
    pub time: String,
    /// The host, the namespace for baas backups.
    #[serde(default)]
    pub hostname: String,
    /// `/data/<pvc>` for volumes, `/<namespace>-<pod>-<container>` for backup commands.
    #[serde(default)]
    pub paths: Vec<String>,
    /// restic tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// What the backup read (restic 0.17 and later).
    #[serde(default)]
    pub summary: Option<SnapshotSummary>,
}

/// The part of a snapshot's summary that is listed.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
pub struct SnapshotSummary {
    /// Files read.
    #[serde(default)]
    pub total_files_processed: Option<u64>,
    /// Bytes read.
    #[serde(default)]
    pub total_bytes_processed: Option<u64>,
}

/// The restic arguments: this namespace's snapshots, of one PVC when asked.
pub fn restic_args(namespace: &str, pvc: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "snapshots".to_string(),
        "--json".to_string(),
        "--no-lock".to_string(),
        "--host".to_string(),
        namespace.to_string(),
    ];
    if let Some(pvc) = pvc {
        args.push("--path".to_string());
        args.push(format!("{}/{pvc}", crate::job::DATA_DIR));
    }
    args
}

/// The snapshot table, oldest first as restic lists them.
pub fn table(snapshots: &[Snapshot], now: jiff::Timestamp, wide: bool) -> Table {
    let mut header = vec!["ID", "TIME", "AGE", "HOST", "PATHS", "SIZE"];
    if wide {
        header.extend(["FILES", "TAGS"]);
    }
    let mut table = Table::new(&header);
    for s in snapshots {
        let time = s.time.parse::<jiff::Timestamp>().ok();
        let summary = s.summary.as_ref();
        let mut row = vec![
            if wide { s.id.clone() } else { short_id(&s.id) },
            time.map_or_else(
                || s.time.clone(),
                |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            ),
            time.map_or_else(|| NONE.to_string(), |t| age(t, now)),
            s.hostname.clone(),
            s.paths.join(","),
            summary
                .and_then(|m| m.total_bytes_processed)
                .map_or_else(|| NONE.to_string(), human_bytes),
        ];
        if wide {
            row.push(
                summary
                    .and_then(|m| m.total_files_processed)
                    .map_or_else(|| NONE.to_string(), |f| f.to_string()),
            );
            row.push(
                s.tags
                    .as_ref()
                    .filter(|t| !t.is_empty())
                    .map_or_else(|| NONE.to_string(), |t| t.join(",")),
            );
        }
        table.rows.push(row);
    }
    table
}

/// What restic's exit code means for the user (restic 0.17 documents 10–12).
pub fn restic_failure(code: Option<i32>, stderr: &str) -> String {
    let detail = crate::redact::redact(stderr.trim());
    match code {
        Some(10) => "the repository does not exist yet: no backup has written to it".into(),
        Some(11) => format!("the repository is locked: {detail}"),
        Some(12) => "the repository password in the Schedule's Secret is wrong".into(),
        Some(code) => format!("restic snapshots failed with exit code {code}: {detail}"),
        None => format!("restic snapshots was killed: {detail}"),
    }
}

/// Runs the verb; its output.
pub async fn run(
    conn: &Connection,
    global: &GlobalArgs,
    args: &SnapshotsArgs,
) -> PluginResult<String> {
    let schedule = schedule(conn, args.schedule.as_deref()).await?;
    let credentials = credentials(conn, &schedule.spec.backend).await?;
    let mut command = tokio::process::Command::new(&args.restic);
    command
        .args(restic_args(&conn.namespace, args.pvc.as_deref()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in FOREIGN_ENV {
        command.env_remove(name);
    }
    command.envs(credentials.env.iter().map(|(k, v)| (k, v)));
    let output = command.output().await.map_err(|error| {
        let restic = args.restic.display();
        PluginError::Failed(if error.kind() == ErrorKind::NotFound {
            format!(
                "restic not found (looked for {restic:?} on PATH): install restic 0.17 or later \
                 or give --restic PATH"
            )
        } else {
            format!("cannot run {restic}: {error}")
        })
    })?;
    if !output.status.success() {
        return Err(PluginError::Failed(restic_failure(
            output.status.code(),
            &String::from_utf8_lossy(&output.stderr),
        )));
    }
    // restic prints `null` for no snapshots in some versions.
    let raw: Vec<Value> = serde_json::from_slice::<Option<Vec<Value>>>(&output.stdout)
        .map_err(|e| PluginError::Failed(format!("restic printed no snapshot list: {e}")))?
        .unwrap_or_default();
    if let Some(document) = structured(&raw, global.output)? {
        return Ok(document);
    }
    let snapshots: Vec<Snapshot> = raw
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    if snapshots.is_empty() {
        eprintln!("No snapshots found for namespace {}.", conn.namespace);
        return Ok(String::new());
    }
    let wide = global.output == Some(OutputFormat::Wide);
    Ok(table(&snapshots, jiff::Timestamp::now(), wide).render(!global.no_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"[{"time":"2026-12-01T17:00:00.123456789Z","tree":"t","paths":["/data/files"],
        "hostname":"shop","username":"root","id":"1a2b3c4d5e6f7a8b","short_id":"1a2b3c4d",
        "summary":{"total_files_processed":3,"total_bytes_processed":1536}},
        {"time":"2026-12-01T18:00:00+01:00","paths":["/shop-db-0-mariadb"],"hostname":"shop",
        "id":"ffeeddcc00112233","tags":["x"]}]"#;

    #[test]
    fn snapshots_list_id_time_age_host_paths_and_size() {
        let snapshots: Vec<Snapshot> = serde_json::from_str(LISTING).expect("restic's JSON");
        let now: jiff::Timestamp = "2026-12-01T17:05:00Z".parse().expect("time");
        assert_eq!(
            table(&snapshots, now, false).render(true),
            "ID         TIME                  AGE   HOST   PATHS                SIZE\n\
             1a2b3c4d   2026-12-01 17:00:00   5m    shop   /data/files          1.5 KiB\n\
             ffeeddcc   2026-12-01 17:00:00   5m    shop   /shop-db-0-mariadb   <none>\n"
        );
        let wide = table(&snapshots, now, true).render(false);
        let first: Vec<&str> = wide
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            first,
            [
                "1a2b3c4d5e6f7a8b",
                "2026-12-01",
                "17:00:00",
                "5m",
                "shop",
                "/data/files",
                "1.5",
                "KiB",
                "3",
                "<none>"
            ]
        );
    }

    #[test]
    fn restic_is_asked_for_the_namespace_and_the_pvc_only() {
        assert_eq!(
            restic_args("shop", Some("db")),
            [
                "snapshots",
                "--json",
                "--no-lock",
                "--host",
                "shop",
                "--path",
                "/data/db"
            ]
        );
        assert_eq!(restic_args("shop", None).len(), 5);
    }

    #[test]
    fn restic_exit_codes_are_explained_without_credentials() {
        assert!(restic_failure(Some(10), "").contains("does not exist yet"));
        assert!(restic_failure(Some(12), "").contains("password"));
        let failure = restic_failure(
            Some(1),
            "Fatal: https://s3.example.com/b?X-Amz-Credential=AKIA123&X-Amz-Signature=abc",
        );
        assert!(
            !failure.contains("AKIA123") && !failure.contains("abc"),
            "{failure}"
        );
    }
}
