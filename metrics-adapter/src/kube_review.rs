//! The cluster-backed reviewers: TokenReview (`authentication.k8s.io/v1`) and
//! SubjectAccessReview (`authorization.k8s.io/v1`).

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;

use crate::auth::{AccessReviewer, AuthError, Decision, RequestAttributes, TokenReviewer, UserInfo};
use crate::types::{GROUP, VERSION};

/// [`TokenReviewer`] creating a TokenReview (needs `create tokenreviews`, part of
/// `system:auth-delegator`).
#[derive(Clone)]
pub struct KubeTokenReviewer {
    client: kube::Client,
}

impl KubeTokenReviewer {
    /// A reviewer using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        // The error of a create never echoes the request body, so the token is not in it.
        let reviewed = api.create(&PostParams::default(), &review).await?;
        let Some(status) = reviewed.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let Some(user) = status.user else {
            return Ok(None);
        };
        let username = user.username.unwrap_or_default();
        if username.is_empty() {
            return Ok(None);
        }
        Ok(Some(UserInfo {
            username,
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }))
    }
}

/// [`AccessReviewer`] creating a SubjectAccessReview (needs `create subjectaccessreviews`,
/// part of `system:auth-delegator`).
#[derive(Clone)]
pub struct KubeAccessReviewer {
    client: kube::Client,
}

impl KubeAccessReviewer {
    /// A reviewer using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

/// The SubjectAccessReview asked for `user` and `attributes`.
pub fn subject_access_review(user: &UserInfo, attributes: &RequestAttributes) -> SubjectAccessReview {
    let (resource_attributes, non_resource_attributes) = match attributes {
        RequestAttributes::Resource {
            namespace,
            resource,
            verb,
        } => (
            Some(ResourceAttributes {
                group: Some(GROUP.to_owned()),
                version: Some(VERSION.to_owned()),
                resource: Some(resource.clone()),
                namespace: Some(namespace.clone()),
                verb: Some(verb.clone()),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        RequestAttributes::NonResource { path, verb } => (
            None,
            Some(NonResourceAttributes {
                path: Some(path.clone()),
                verb: Some(verb.clone()),
            }),
        ),
    };
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.username.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes,
            non_resource_attributes,
        },
        ..SubjectAccessReview::default()
    }
}

#[async_trait]
impl AccessReviewer for KubeAccessReviewer {
    async fn review(&self, user: &UserInfo, attributes: &RequestAttributes) -> Result<Decision, AuthError> {
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &subject_access_review(user, attributes))
            .await?;
        let Some(status) = reviewed.status else {
            return Err(AuthError::Review("SubjectAccessReview without status".to_owned()));
        };
        if status.allowed {
            return Ok(Decision::Allow);
        }
        if let Some(error) = status.evaluation_error.filter(|e| !e.is_empty()) {
            tracing::debug!(%error, "SubjectAccessReview evaluation error");
        }
        Ok(Decision::Deny {
            reason: status.reason.unwrap_or_default(),
        })
    }
}
