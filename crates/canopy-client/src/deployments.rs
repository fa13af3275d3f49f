//! The deployment manager, as the reference lays it out under `/v1/projects/{project}`:
//! deployments (`/appdeployment/deployments`, single ones wrapped as `{deployment}`), their
//! edges (`/clusters`), the deployments on one edge (`/deployments/clusters/{id}`), the status
//! summary (`/summary/deployments_status`) and the cluster inventory (`/appdeployment/clusters`).
//! Bodies are the `canopy-deploy` model types, so a GET-modify-PUT round trip is lossless.

use canopy_deploy::model::{
    Cluster, ClusterInfo, DeleteType, Deployment, DeploymentInstancesCluster, DeploymentsStatus,
};
use reqwest::Method;

use crate::{Client, ClientError, ListParams, Page, collect_all, decode_err, parse_json, take};

/// `{deploymentId}`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    deployment_id: String,
}

/// The `deleteType` query value.
fn delete_type_query(t: DeleteType) -> &'static str {
    match t {
        DeleteType::ParentOnly => "PARENT_ONLY",
        DeleteType::All => "ALL",
    }
}

impl Client {
    /// `GET /appdeployment/deployments`: one page (`params.labels`: deployments with any of
    /// those labels in a target).
    pub async fn list_deployments(
        &self,
        params: &ListParams,
    ) -> Result<Page<Deployment>, ClientError> {
        let url = self.deploy_url(&["appdeployment", "deployments"]);
        self.get_page(&url, "deployments", params).await
    }

    /// Every deployment from `params.offset` on, across pages.
    pub async fn list_all_deployments(
        &self,
        params: &ListParams,
    ) -> Result<Vec<Deployment>, ClientError> {
        collect_all(params, async |p: &ListParams| {
            self.list_deployments(p).await
        })
        .await
    }

    /// `POST /appdeployment/deployments`: returns the new deployment's id.
    pub async fn create_deployment(&self, deployment: &Deployment) -> Result<String, ClientError> {
        let url = self.deploy_url(&["appdeployment", "deployments"]);
        let req = self.request(Method::POST, &url).json(deployment);
        let body = self.execute_bytes(req, self.timeout).await?;
        let created: Created = parse_json(&url, &body)?;
        Ok(created.deployment_id)
    }

    /// `GET /canopy/v1/projects/{project}/deployments/{id}/apps/{app}/manifest`: the manifest
    /// Helm rendered for a Helm-chart application of the deployment (YAML; Secret values
    /// masked unless the caller may change the deployment).
    pub async fn deployment_manifest(&self, id: &str, app: &str) -> Result<String, ClientError> {
        let url = self.canopy_url(&["deployments", id, "apps", app, "manifest"]);
        let body = self
            .execute_bytes(self.request(Method::GET, &url), self.transfer_timeout)
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /appdeployment/deployments/{id}`: with its status and the apps of every edge.
    pub async fn get_deployment(&self, id: &str) -> Result<Deployment, ClientError> {
        let url = self.deploy_url(&["appdeployment", "deployments", id]);
        let body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take(&url, body, &["deployment"])
    }

    /// `PUT /appdeployment/deployments/{id}`: full replacement (GET, modify, PUT; masked secret
    /// values sent back unchanged keep their real value). Returns the deployment as updated.
    pub async fn update_deployment(
        &self,
        id: &str,
        deployment: &Deployment,
    ) -> Result<Deployment, ClientError> {
        let url = self.deploy_url(&["appdeployment", "deployments", id]);
        let req = self.request(Method::PUT, &url).json(deployment);
        let body = self.execute_json(req, &url).await?;
        take(&url, body, &["deployment"])
    }

    /// `DELETE /appdeployment/deployments/{id}?deleteType=...`.
    pub async fn delete_deployment(
        &self,
        id: &str,
        delete_type: DeleteType,
    ) -> Result<(), ClientError> {
        let url = self.deploy_url(&["appdeployment", "deployments", id]);
        let req = self
            .request(Method::DELETE, &url)
            .query(&[("deleteType", delete_type_query(delete_type))]);
        self.execute(req, self.timeout).await?;
        Ok(())
    }

    /// `GET /appdeployment/deployments/{id}/clusters`: one page of the deployment's edges with
    /// their per-app status.
    pub async fn deployment_clusters(
        &self,
        id: &str,
        params: &ListParams,
    ) -> Result<Page<Cluster>, ClientError> {
        let url = self.deploy_url(&["appdeployment", "deployments", id, "clusters"]);
        self.get_page(&url, "clusters", params).await
    }

    /// Every edge of a deployment, across pages.
    pub async fn all_deployment_clusters(
        &self,
        id: &str,
        params: &ListParams,
    ) -> Result<Vec<Cluster>, ClientError> {
        collect_all(params, async |p: &ListParams| {
            self.deployment_clusters(id, p).await
        })
        .await
    }

    /// `GET /deployments/clusters/{cluster}`: one page of the deployments running on one edge
    /// (by id or name).
    pub async fn deployments_on_cluster(
        &self,
        cluster: &str,
        params: &ListParams,
    ) -> Result<Page<DeploymentInstancesCluster>, ClientError> {
        let url = self.deploy_url(&["deployments", "clusters", cluster]);
        self.get_page(&url, "deploymentInstancesCluster", params)
            .await
    }

    /// `GET /summary/deployments_status`: edges counted by state over the deployments matching
    /// `labels` (each `k=v[,k=v]`; none = every deployment).
    pub async fn deployments_status(
        &self,
        labels: &[String],
    ) -> Result<DeploymentsStatus, ClientError> {
        let url = self.deploy_url(&["summary", "deployments_status"]);
        let query: Vec<(&str, &str)> = labels
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| ("labels", l.as_str()))
            .collect();
        let req = self.request(Method::GET, &url).query(&query);
        let body = self.execute_json(req, &url).await?;
        serde_json::from_value(body).map_err(|e| decode_err(&url, e))
    }

    /// `GET /appdeployment/clusters`: one page of the edge inventory as the reference shows it.
    pub async fn list_clusters(
        &self,
        params: &ListParams,
    ) -> Result<Page<ClusterInfo>, ClientError> {
        let url = self.deploy_url(&["appdeployment", "clusters"]);
        self.get_page(&url, "clusters", params).await
    }

    /// `GET /appdeployment/clusters/{id}`: one edge with every app it runs.
    pub async fn get_cluster(&self, id: &str) -> Result<Cluster, ClientError> {
        let url = self.deploy_url(&["appdeployment", "clusters", id]);
        let body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take(&url, body, &["cluster"])
    }
}
