//! `podIdentity.provider: aws` as KEDA reads it: the role the operator's own identity assumes
//! (`roleArn`, with `externalID`), or, with `identityOwner: workload`, the role of the workload's
//! ServiceAccount (its `eks.amazonaws.com/role-arn` annotation). The role becomes the trigger's
//! `awsRoleArn` parameter and the external ID its `awsExternalID`, which the AWS scalers assume
//! through STS.

use std::collections::BTreeMap;

use ebb_crds::{IdentityOwner, PodIdentity, PodIdentityProvider};

use crate::compile::inputs::{EnvSource, ObjectSource, ResolvedInputs};

/// The annotation of a ServiceAccount that names its IAM role (IRSA).
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// What an aws pod identity asks for, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsIdentity {
    /// The operator's own identity, as it is.
    Operator,
    /// The operator's identity assumes this role (with this external ID).
    AssumeRole {
        /// `podIdentity.roleArn`.
        role_arn: String,
        /// `podIdentity.externalID`.
        external_id: Option<String>,
    },
    /// The role of the workload's ServiceAccount.
    Workload,
}

/// Reads an aws pod identity; `None` for other providers. The errors are KEDA's admission rules:
/// `roleArn` with `identityOwner: workload`, and `externalID` without `roleArn`.
pub fn aws_identity(p: &PodIdentity) -> Option<Result<AwsIdentity, String>> {
    if p.provider != PodIdentityProvider::Aws {
        return None;
    }
    let role = p.role_arn.as_deref().filter(|r| !r.is_empty());
    let external = p.external_id.as_deref().filter(|e| !e.is_empty());
    let workload = p.identity_owner == Some(IdentityOwner::Workload);
    Some(match (role, external, workload) {
        (Some(_), _, true) => Err("podIdentity.roleArn cannot be set when identityOwner is workload".into()),
        (None, Some(_), _) => Err("podIdentity.externalID needs podIdentity.roleArn".into()),
        (Some(r), e, false) => Ok(AwsIdentity::AssumeRole {
            role_arn: r.to_string(),
            external_id: e.map(str::to_string),
        }),
        (None, None, true) => Ok(AwsIdentity::Workload),
        (None, None, false) => Ok(AwsIdentity::Operator),
    })
}

/// Adds what an aws pod identity means to the auth params (`awsRoleArn`, `awsExternalID`),
/// looking up the workload's ServiceAccount when it owns the identity. Problems name the
/// authentication (`what`). Returns false when a lookup could not complete.
pub async fn apply_aws_identity(
    source: &dyn ObjectSource,
    namespace: &str,
    env_source: EnvSource<'_>,
    identity: &PodIdentity,
    what: &str,
    params: &mut BTreeMap<String, String>,
    out: &mut ResolvedInputs,
) -> bool {
    let Some(read) = aws_identity(identity) else {
        return true;
    };
    match read {
        Err(problem) => {
            out.errors.push(format!("{what}: {problem}"));
            true
        }
        Ok(AwsIdentity::Operator) => true,
        Ok(AwsIdentity::AssumeRole {
            role_arn,
            external_id,
        }) => {
            params.insert("awsRoleArn".into(), role_arn);
            if let Some(e) = external_id {
                params.insert("awsExternalID".into(), e);
            }
            true
        }
        Ok(AwsIdentity::Workload) => {
            let Some(account) = service_account_of(source, namespace, env_source, out).await else {
                return false;
            };
            let origin = format!("{what} identityOwner workload: ServiceAccount {namespace}/{account}");
            let lookup = source.service_account_annotations(namespace, &account).await;
            let Some(annotations) = out.found(source, lookup, origin.clone()) else {
                return false;
            };
            match annotations.get(ROLE_ANNOTATION) {
                Some(role) if !role.is_empty() => {
                    params.insert("awsRoleArn".into(), role.clone());
                }
                _ => out
                    .errors
                    .push(format!("{origin} has no {ROLE_ANNOTATION} annotation")),
            }
            true
        }
    }
}

/// The ServiceAccount the workload's pods run as (`default` when the template names none).
async fn service_account_of(
    source: &dyn ObjectSource,
    namespace: &str,
    env_source: EnvSource<'_>,
    out: &mut ResolvedInputs,
) -> Option<String> {
    let template = match env_source {
        EnvSource::Template { template, .. } => template.clone(),
        EnvSource::Workload(target) => {
            let found = source
                .pod_template(
                    namespace,
                    target.api_version_or_default(),
                    target.kind_or_default(),
                    &target.name,
                )
                .await;
            let what = format!(
                "scale target {} {namespace}/{} (for its ServiceAccount)",
                target.kind_or_default(),
                target.name
            );
            out.found(source, found, what)?
        }
    };
    Some(
        template
            .spec
            .and_then(|s| s.service_account_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::validate::{BundleObjects, read_documents};
    use crate::compile::triggers::{CompiledTrigger, compile};
    use ebb_crds::ScaledObject;

    fn compiled(auth: &str, extra: &str) -> CompiledTrigger {
        let yaml = format!(
            r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {{name: x}}
spec:
  scaleTargetRef: {{name: worker}}
  triggers:
    - type: aws-sqs-queue
      authenticationRef: {{name: aws}}
      metadata: {{queueURL: "https://sqs.eu-west-1.amazonaws.com/1/q", awsRegion: eu-west-1}}
---
apiVersion: ebb.dev/v1alpha1
kind: TriggerAuthentication
metadata: {{name: aws}}
spec:
  podIdentity: {auth}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: worker}}
spec:
  template:
    spec:
      serviceAccountName: worker-sa
      containers: [{{name: c, image: i}}]
{extra}"#
        );
        let docs = read_documents("t.yaml", &yaml).unwrap();
        let bundle = BundleObjects::from_documents(&docs);
        let so: ScaledObject = serde_json::from_value(docs[0].value.clone()).unwrap();
        futures::executor::block_on(compile(&bundle, "default", &so)).remove(0)
    }

    #[test]
    fn the_role_and_external_id_reach_the_trigger() {
        let c = compiled(
            r#"{provider: aws, roleArn: "arn:aws:iam::1:role/reader", externalID: ext-1}"#,
            "",
        );
        let parsed = c.usable().expect("usable");
        assert_eq!(
            parsed.params.str("awsRoleArn"),
            Some("arn:aws:iam::1:role/reader")
        );
        assert_eq!(parsed.params.str("awsExternalID"), Some("ext-1"));
        assert!(parsed.context.aws_pod_identity);
    }

    #[test]
    fn the_workload_owns_the_identity_through_its_service_account() {
        let sa = r#"---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: worker-sa
  annotations: {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/worker"}
"#;
        let c = compiled("{provider: aws, identityOwner: workload}", sa);
        let parsed = c.usable().expect("usable");
        assert_eq!(
            parsed.params.str("awsRoleArn"),
            Some("arn:aws:iam::1:role/worker")
        );
        let unannotated = sa.replace(
            r#"annotations: {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/worker"}"#,
            "annotations: {}",
        );
        let c = compiled("{provider: aws, identityOwner: workload}", &unannotated);
        let problem = c.problem().expect("a problem");
        assert!(
            problem.contains("worker-sa has no eks.amazonaws.com/role-arn"),
            "{problem}"
        );
        let c = compiled(
            r#"{provider: aws, identityOwner: workload, roleArn: "arn:aws:iam::1:role/r"}"#,
            sa,
        );
        assert!(
            c.problem()
                .expect("a problem")
                .contains("identityOwner is workload")
        );
    }

    fn identity(role: Option<&str>, external: Option<&str>, owner: Option<IdentityOwner>) -> PodIdentity {
        PodIdentity {
            provider: PodIdentityProvider::Aws,
            role_arn: role.map(str::to_string),
            external_id: external.map(str::to_string),
            identity_owner: owner,
        }
    }

    #[test]
    fn keda_rules_for_roles_owners_and_external_ids() {
        let arn = "arn:aws:iam::1:role/r";
        assert_eq!(
            aws_identity(&identity(None, None, None)),
            Some(Ok(AwsIdentity::Operator))
        );
        assert_eq!(
            aws_identity(&identity(Some(arn), Some("x"), Some(IdentityOwner::Keda))),
            Some(Ok(AwsIdentity::AssumeRole {
                role_arn: arn.into(),
                external_id: Some("x".into())
            }))
        );
        assert_eq!(
            aws_identity(&identity(None, None, Some(IdentityOwner::Workload))),
            Some(Ok(AwsIdentity::Workload))
        );
        assert!(matches!(
            aws_identity(&identity(Some(arn), None, Some(IdentityOwner::Workload))),
            Some(Err(m)) if m.contains("identityOwner")
        ));
        assert!(matches!(
            aws_identity(&identity(None, Some("x"), None)),
            Some(Err(m)) if m.contains("externalID")
        ));
        assert!(matches!(
            aws_identity(&identity(Some(""), None, None)),
            Some(Ok(AwsIdentity::Operator))
        ));
        let none = PodIdentity {
            provider: PodIdentityProvider::None,
            ..identity(Some(arn), None, None)
        };
        assert_eq!(aws_identity(&none), None);
    }
}
