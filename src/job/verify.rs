//! The Job of a verification. The agent restores the newest snapshots into an `emptyDir`
//! that only this pod sees, so a verification can never touch live data; with an application
//! check the agent runs first, as an init container, and the check runs after it on the
//! restored files, in a container of its own image.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::env::{self, base_env, plain_env};
use super::names::{RunMeta, job_name};
use super::{JobSettings, JobShape, build_job};
use crate::Result;
use crate::crd::VerifySpec;
use crate::crd::verify::VERIFY_DIR;

/// Name of the application check's container, which the run's status names when it fails.
pub const APP_CHECK_CONTAINER: &str = "app-check";
/// Room beyond the restored bytes: directories, restic's temporary files.
const SCRATCH_HEADROOM: u64 = 64 * 1024 * 1024;

/// The scratch space for `bytes` of restored data: a tenth more and some headroom, since the
/// kubelet evicts a pod whose `emptyDir` outgrows its limit.
pub fn scratch_limit(bytes: u64) -> Quantity {
    let limit = bytes
        .saturating_add(bytes / 10)
        .saturating_add(SCRATCH_HEADROOM);
    Quantity(limit.to_string())
}

/// The Job of a verification; `scratch_bytes` are the bytes the newest backup of the
/// namespace read, when known (without them the scratch space has no limit of its own).
pub fn build_verify_job(
    run: &RunMeta,
    spec: &VerifySpec,
    scratch_bytes: Option<u64>,
    settings: &JobSettings,
) -> Result<Job> {
    let mut env = base_env(run, &spec.backend, spec.prom_url.as_deref())?;
    env.push(plain_env(env::ENV_VERIFY_DIR, VERIFY_DIR));
    let shape = JobShape {
        name: job_name(&run.name, run.op, None),
        env,
        mounts: Vec::new(),
        node: None,
    };
    let mut job = build_job(run, &spec.backend, shape, settings);
    let Some(pod) = job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
    else {
        return Ok(job);
    };
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: scratch_bytes.map(scratch_limit),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    for agent in &mut pod.containers {
        agent
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: "scratch".into(),
                mount_path: VERIFY_DIR.into(),
                ..VolumeMount::default()
            });
    }
    if let Some(check) = &spec.app_check {
        // Init containers run to completion one after the other, and the pod goes on only
        // when they succeed: the check sees every snapshot restored and checked, or never runs.
        pod.init_containers = Some(std::mem::take(&mut pod.containers));
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        pod.containers = vec![Container {
            name: APP_CHECK_CONTAINER.into(),
            image: Some(check.image.clone()),
            command: Some(check.command.clone()),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "scratch".into(),
                    mount_path: VERIFY_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: "tmp".into(),
                    mount_path: "/tmp".into(),
                    ..VolumeMount::default()
                },
            ]),
            // Its last lines of output say why it failed; it gets no credentials to print.
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }];
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AppCheck, Operation};
    use crate::job::fixtures::{backend, env_of, run};

    fn spec(app_check: Option<AppCheck>) -> VerifySpec {
        VerifySpec {
            backend: backend(),
            app_check,
            prom_url: None,
        }
    }

    fn pod(job: &Job) -> &k8s_openapi::api::core::v1::PodSpec {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("a pod template")
    }

    #[test]
    fn verify_job_restores_into_its_own_sized_scratch_space_and_mounts_no_claim() {
        let job = build_verify_job(
            &run(Operation::Verify),
            &spec(None),
            Some(1_000_000_000),
            &JobSettings::default(),
        )
        .expect("builds");
        let pod = pod(&job);
        let volumes = pod.volumes.as_ref().expect("volumes");
        assert_eq!(volumes.len(), 1, "{volumes:?}");
        assert!(volumes[0].persistent_volume_claim.is_none());
        let scratch = volumes[0].empty_dir.as_ref().expect("an emptyDir");
        assert_eq!(
            scratch.size_limit,
            Some(Quantity((1_100_000_000 + SCRATCH_HEADROOM).to_string()))
        );
        assert!(pod.init_containers.is_none());
        let agent = &pod.containers[0];
        assert_eq!(
            agent.command.as_deref(),
            Some(&["baas".to_string(), "agent".into(), "verify".into()][..])
        );
        let mounts = agent.volume_mounts.as_ref().expect("mounts");
        assert_eq!(mounts[0].mount_path, VERIFY_DIR);
        assert_eq!(env_of(&job)["BAAS_VERIFY_DIR"]["value"], VERIFY_DIR);
        assert_eq!(
            job.metadata.labels.as_ref().expect("labels")["backup.appuio.ch/operation"],
            "verify"
        );
    }

    #[test]
    fn without_backup_figures_the_scratch_space_has_no_limit_of_its_own() {
        let job = build_verify_job(
            &run(Operation::Verify),
            &spec(None),
            None,
            &JobSettings::default(),
        )
        .expect("builds");
        let volumes = pod(&job).volumes.clone().unwrap_or_default();
        assert_eq!(
            volumes[0]
                .empty_dir
                .as_ref()
                .and_then(|e| e.size_limit.clone()),
            None
        );
    }

    #[test]
    fn app_check_runs_after_the_agent_on_the_restored_files_read_only_without_credentials() {
        let check = AppCheck {
            image: "docker.io/library/mariadb:11".into(),
            command: vec!["sh".into(), "-c".into(), "mariadb < /verify/x".into()],
        };
        let job = build_verify_job(
            &run(Operation::Verify),
            &spec(Some(check.clone())),
            Some(10),
            &JobSettings::default(),
        )
        .expect("builds");
        let pod = pod(&job);
        let init = pod.init_containers.as_ref().expect("the agent runs first");
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].name, "agent");
        assert_eq!(pod.containers.len(), 1);
        let app = &pod.containers[0];
        assert_eq!(app.name, APP_CHECK_CONTAINER);
        assert_eq!(app.image.as_deref(), Some(check.image.as_str()));
        assert_eq!(app.command.as_ref(), Some(&check.command));
        assert!(
            app.env.is_none(),
            "the check gets no credentials: {:?}",
            app.env
        );
        let mounts = app.volume_mounts.as_ref().expect("mounts");
        let scratch = mounts
            .iter()
            .find(|m| m.mount_path == VERIFY_DIR)
            .expect("the restored files");
        assert_eq!(scratch.read_only, Some(true));
        assert!(mounts.iter().any(|m| m.mount_path == "/tmp"));
        let security = app.security_context.as_ref().expect("a security context");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert!(
            security
                .capabilities
                .as_ref()
                .and_then(|c| c.add.clone())
                .is_none()
        );
        assert_eq!(
            app.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }
}
