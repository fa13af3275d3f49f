//! The project policy (`/canopy/v1/projects/{project}/policy`): what the project's deployments
//! may run. Anyone with a role on the project reads it; administrators set it.

use reqwest::Method;

pub use canopy_core::policy::ProjectPolicy;

use crate::{Client, ClientError};

impl Client {
    /// `GET /canopy/v1/projects/{project}/policy`: the policy (the default when none was set).
    pub async fn get_policy(&self) -> Result<ProjectPolicy, ClientError> {
        let url = self.canopy_url(&["policy"]);
        let body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        serde_json::from_value(body).map_err(|e| crate::decode_err(&url, e))
    }

    /// `PUT /canopy/v1/projects/{project}/policy`: sets the policy; returns what was stored.
    pub async fn set_policy(&self, policy: &ProjectPolicy) -> Result<ProjectPolicy, ClientError> {
        let url = self.canopy_url(&["policy"]);
        let req = self.request(Method::PUT, &url).json(policy);
        let body = self.execute_json(req, &url).await?;
        serde_json::from_value(body).map_err(|e| crate::decode_err(&url, e))
    }
}
