//! The rules of verification: a Schedule's `verify` section, a Verify run, the application
//! check both name, and a Restore that reads another namespace's snapshots.

use super::{Checker, ReviewContext, Verdict};
use crate::crd::common::MAX_CRON_LENGTH;
use crate::crd::schedule::VerifySchedule;
use crate::crd::verify::{MAX_COMMAND_ITEM_LENGTH, MAX_COMMAND_ITEMS, MAX_IMAGE_LENGTH};
use crate::crd::{AppCheck, Backend, SecretKeyRef, VerifySpec};
use crate::lookup::SecretInfo;

/// Longest namespace name (a DNS label).
const MAX_NAMESPACE_LENGTH: usize = 63;

impl Checker<'_> {
    /// `spec.verify` of a Schedule: cron, history, bound and application check.
    pub(super) fn verify_section(&mut self, verify: &VerifySchedule) {
        self.schedule("spec.verify.schedule", &verify.schedule);
        self.non_negative("spec.verify.keepJobs", verify.keep_jobs.map(i64::from));
        self.prom_url("spec.verify.promURL", verify.prom_url.as_ref());
        if let Some(max_age) = &verify.max_age
            && self.within_limit("spec.verify.maxAge", max_age, MAX_CRON_LENGTH)
        {
            match crate::duration::parse(max_age) {
                Ok(age) if age.is_zero() => {
                    self.deny("spec.verify.maxAge", "must be positive, found 0")
                }
                Ok(_) => {}
                Err(problem) => self.deny("spec.verify.maxAge", problem),
            }
        }
        if let Some(check) = &verify.app_check {
            self.app_check("spec.verify.appCheck", check);
        }
    }

    fn app_check(&mut self, path: &str, check: &AppCheck) {
        let image_path = format!("{path}.image");
        if self.within_limit(&image_path, &check.image, MAX_IMAGE_LENGTH)
            && let Some(problem) = image_reference_problem(&check.image)
        {
            self.deny(&image_path, problem);
        }
        let command_path = format!("{path}.command");
        if check.command.is_empty() {
            self.deny(
                &command_path,
                "Required value: name the program to run, for example [\"sh\", \"-c\", \"...\"]",
            );
        } else if check.command.len() > MAX_COMMAND_ITEMS {
            self.deny(
                &command_path,
                format!(
                    "has {} items, more than the {MAX_COMMAND_ITEMS} allowed",
                    check.command.len()
                ),
            );
        } else if check.command[0].trim().is_empty() {
            self.deny(&format!("{command_path}[0]"), "must name a program");
        }
        for (i, item) in check.command.iter().enumerate().take(MAX_COMMAND_ITEMS) {
            // The length only: the command line is the user's and may hold a password, so it
            // is never quoted back.
            if item.len() > MAX_COMMAND_ITEM_LENGTH {
                self.deny(
                    &format!("{command_path}[{i}]"),
                    format!("is longer than {MAX_COMMAND_ITEM_LENGTH} bytes"),
                );
            }
        }
    }

    /// A Restore from `source` (another namespace) reads the repository with this namespace's
    /// own copy of its credentials, never the source namespace's: each Secret must exist here.
    fn credentials_here(&mut self, source: &str, backend: &Backend) {
        let Some(lookups) = self.ctx.lookups else {
            return;
        };
        let refs: [(&str, Option<&SecretKeyRef>); 3] = [
            (
                "spec.backend.repoPasswordSecretRef",
                backend.repo_password(),
            ),
            (
                "spec.backend.s3.accessKeyIDSecretRef",
                Some(&backend.s3.access_key_id_secret_ref),
            ),
            (
                "spec.backend.s3.secretAccessKeySecretRef",
                Some(&backend.s3.secret_access_key_secret_ref),
            ),
        ];
        let namespace = self.ctx.namespace.to_string();
        for (path, secret) in refs {
            let Some(secret) = secret.filter(|s| !s.name.is_empty()) else {
                continue;
            };
            if lookups.secret(&namespace, &secret.name) == SecretInfo::Absent {
                self.deny(
                    &format!("{path}.name"),
                    format!(
                        "Secret {:?} does not exist in namespace {namespace:?}: a Restore of namespace {source:?}'s snapshots reads the repository with this namespace's own copy of its credentials; create it here first",
                        secret.name
                    ),
                );
            }
        }
    }

    /// `spec.sourceNamespace` of a Restore.
    pub(super) fn source_namespace(&mut self, source: &str, backend: &Backend) {
        const PATH: &str = "spec.sourceNamespace";
        if let Some(problem) = namespace_problem(source) {
            self.deny(PATH, problem);
            return;
        }
        if source != self.ctx.namespace {
            self.credentials_here(source, backend);
        }
    }
}

/// Rules of a Verify: its backend and application check.
pub fn validate_verify(spec: &VerifySpec, ctx: ReviewContext<'_>) -> Verdict {
    let mut check = Checker::new(ctx);
    check.backend(&spec.backend);
    check.prom_url("spec.promURL", spec.prom_url.as_ref());
    if let Some(app) = &spec.app_check {
        check.app_check("spec.appCheck", app);
    }
    check.finish()
}

/// Why `name` is not a namespace name (a DNS label), if it is not.
pub fn namespace_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(
            "must not be empty; leave it out to restore this namespace's snapshots".into(),
        );
    }
    if name.len() > MAX_NAMESPACE_LENGTH {
        return Some(format!(
            "is {} characters long, more than the {MAX_NAMESPACE_LENGTH} of a namespace name",
            name.len()
        ));
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!valid).then(|| {
        format!("{name:?} is not a namespace name: lowercase letters, digits and '-', starting and ending with a letter or digit")
    })
}

/// Why `image` is not a container image reference (`[registry[:port]/]path[:tag][@digest]`),
/// if it is not.
pub fn image_reference_problem(image: &str) -> Option<String> {
    let bad = |why: &str| Some(format!("{image:?} is not an image reference: {why}"));
    if image.trim().is_empty() {
        return Some(
            "Required value: name the image, for example docker.io/library/mariadb:11".into(),
        );
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains white space");
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return bad("the digest after '@' must be <algorithm>:<hex>, such as sha256:...");
        }
    }
    // A tag follows the last ':' after the last '/', so a registry port is not a tag.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return bad("a tag is up to 128 letters, digits, '_', '.' and '-'");
        }
    }
    let mut components = path.split('/').peekable();
    let mut first = true;
    while let Some(component) = components.next() {
        let registry = first
            && components.peek().is_some()
            && (component.contains(['.', ':']) || component == "localhost");
        first = false;
        if registry {
            let valid = component
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
            if !valid || component.starts_with(['.', '-', ':']) {
                return bad("the registry must be a host name with an optional port");
            }
            continue;
        }
        let valid = !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && component.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return bad(
                "each part of the repository path is lowercase letters and digits, separated by '.', '_' or '-'",
            );
        }
    }
    None
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn common_image_references_pass() {
        for image in [
            "mariadb",
            "mariadb:11.4",
            "docker.io/library/mariadb:11",
            "baas-test/mariadb:dev",
            "localhost:5000/team/db:v1.2-rc_3",
            "registry.example.com/a/b/c",
            "mariadb@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "quay.io/x/y:1@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(image_reference_problem(image), None, "{image}");
        }
    }

    #[test]
    fn broken_image_references_are_refused_with_the_reason() {
        for (image, part) in [
            ("", "Required value"),
            ("maria db", "white space"),
            ("MariaDB", "lowercase"),
            ("mariadb:", "tag"),
            ("mariadb:-x", "tag"),
            ("mariadb@sha256:xyz", "digest"),
            ("a//b", "lowercase"),
            ("-db", "lowercase"),
        ] {
            let problem = image_reference_problem(image).unwrap_or_default();
            assert!(problem.contains(part), "{image:?}: {problem}");
        }
    }

    #[test]
    fn namespace_names_follow_dns_labels() {
        assert_eq!(namespace_problem("shop-old"), None);
        for bad in ["", "Shop", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(namespace_problem(bad).is_some(), "{bad:?}");
        }
    }
}
