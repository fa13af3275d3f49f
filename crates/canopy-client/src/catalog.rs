//! The catalog operations: registries, applications, deployment packages and artifacts, exactly
//! as the reference REST API lays them out (single entities wrapped as `{registry: ...}`, lists as
//! `{registries: [...], totalElements}`, updates and deletes answering an empty body).

use canopy_core::catalog::{Application, Artifact, DeploymentPackage, Registry};
use reqwest::Method;
use serde_json::Value;

use crate::{Client, ClientError, ListParams, Page, collect_all, take, take_count, take_list};

impl Client {
    async fn list_page<T: serde::de::DeserializeOwned>(
        &self,
        segment: &str,
        key: &'static str,
        params: &ListParams,
        extra: &[(&'static str, String)],
    ) -> Result<Page<T>, ClientError> {
        let url = self.catalog_url(&[segment]);
        let mut query = params.query();
        query.extend_from_slice(extra);
        let req = self.request(Method::GET, &url).query(&query);
        let mut body = self.execute_json(req, &url).await?;
        let items: Vec<T> = take_list(&url, &mut body, &[key])?;
        let total = match body.get("totalElements") {
            None | Some(Value::Null) => u64::from(params.offset.unwrap_or(0)) + items.len() as u64,
            Some(_) => take_count(&url, &body, "totalElements")?,
        };
        Ok(Page { items, total })
    }

    async fn post_entity<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        segment: &str,
        key: &'static str,
        entity: &T,
    ) -> Result<R, ClientError> {
        let url = self.catalog_url(&[segment]);
        let req = self.request(Method::POST, &url).json(entity);
        let body = self.execute_json(req, &url).await?;
        take(&url, body, &[key])
    }

    async fn get_entity<R: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
        key: &'static str,
        query: &[(&'static str, String)],
    ) -> Result<R, ClientError> {
        let url = self.catalog_url(segments);
        let req = self.request(Method::GET, &url).query(query);
        let body = self.execute_json(req, &url).await?;
        take(&url, body, &[key])
    }

    async fn put_entity<T: serde::Serialize>(
        &self,
        segments: &[&str],
        entity: &T,
    ) -> Result<(), ClientError> {
        let url = self.catalog_url(segments);
        let req = self.request(Method::PUT, &url).json(entity);
        self.execute(req, self.timeout).await?;
        Ok(())
    }

    async fn delete_entity(&self, segments: &[&str]) -> Result<(), ClientError> {
        let url = self.catalog_url(segments);
        self.execute(self.request(Method::DELETE, &url), self.timeout)
            .await?;
        Ok(())
    }

    // ---- registries -----------------------------------------------------------------------

    /// `POST /registries`: creates a registry and returns it as stored.
    pub async fn create_registry(&self, registry: &Registry) -> Result<Registry, ClientError> {
        self.post_entity("registries", "registry", registry).await
    }

    /// `GET /registries`: one page. Sensitive fields are included only when asked for.
    pub async fn list_registries(
        &self,
        params: &ListParams,
        show_sensitive_info: bool,
    ) -> Result<Page<Registry>, ClientError> {
        self.list_page(
            "registries",
            "registries",
            params,
            &sensitive(show_sensitive_info),
        )
        .await
    }

    /// Every registry from `params.offset` on, across pages.
    pub async fn list_all_registries(
        &self,
        params: &ListParams,
        show_sensitive_info: bool,
    ) -> Result<Vec<Registry>, ClientError> {
        collect_all(params, async |p: &ListParams| {
            self.list_registries(p, show_sensitive_info).await
        })
        .await
    }

    /// `GET /registries/{name}`.
    pub async fn get_registry(
        &self,
        name: &str,
        show_sensitive_info: bool,
    ) -> Result<Registry, ClientError> {
        self.get_entity(
            &["registries", name],
            "registry",
            &sensitive(show_sensitive_info),
        )
        .await
    }

    /// `PUT /registries/{name}`: full replacement (omitted credentials are cleared).
    pub async fn update_registry(
        &self,
        name: &str,
        registry: &Registry,
    ) -> Result<(), ClientError> {
        self.put_entity(&["registries", name], registry).await
    }

    /// `DELETE /registries/{name}`.
    pub async fn delete_registry(&self, name: &str) -> Result<(), ClientError> {
        self.delete_entity(&["registries", name]).await
    }

    // ---- applications ---------------------------------------------------------------------

    /// `POST /applications`.
    pub async fn create_application(&self, app: &Application) -> Result<Application, ClientError> {
        self.post_entity("applications", "application", app).await
    }

    /// `GET /applications`: one page (`params.kinds` filters by kind).
    pub async fn list_applications(
        &self,
        params: &ListParams,
    ) -> Result<Page<Application>, ClientError> {
        self.list_page("applications", "applications", params, &[])
            .await
    }

    /// Every application from `params.offset` on, across pages.
    pub async fn list_all_applications(
        &self,
        params: &ListParams,
    ) -> Result<Vec<Application>, ClientError> {
        collect_all(params, async |p: &ListParams| {
            self.list_applications(p).await
        })
        .await
    }

    /// `GET /applications/{name}/versions`: every version of one application.
    pub async fn application_versions(&self, name: &str) -> Result<Vec<Application>, ClientError> {
        let url = self.catalog_url(&["applications", name, "versions"]);
        let mut body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        // The reference names this list `application` (singular); accept the plural too.
        take_list(&url, &mut body, &["application", "applications"])
    }

    /// `GET /applications/{name}/versions/{version}`.
    pub async fn get_application(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Application, ClientError> {
        self.get_entity(
            &["applications", name, "versions", version],
            "application",
            &[],
        )
        .await
    }

    /// `PUT /applications/{name}/versions/{version}`: full replacement.
    pub async fn update_application(
        &self,
        name: &str,
        version: &str,
        app: &Application,
    ) -> Result<(), ClientError> {
        self.put_entity(&["applications", name, "versions", version], app)
            .await
    }

    /// `DELETE /applications/{name}/versions/{version}`.
    pub async fn delete_application(&self, name: &str, version: &str) -> Result<(), ClientError> {
        self.delete_entity(&["applications", name, "versions", version])
            .await
    }

    /// `GET .../reference_count`: how many deployment packages use this application version.
    pub async fn application_reference_count(
        &self,
        name: &str,
        version: &str,
    ) -> Result<u64, ClientError> {
        let url = self.catalog_url(&["applications", name, "versions", version, "reference_count"]);
        let body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take_count(&url, &body, "referenceCount")
    }

    // ---- deployment packages --------------------------------------------------------------

    /// `POST /deployment_packages`.
    pub async fn create_deployment_package(
        &self,
        package: &DeploymentPackage,
    ) -> Result<DeploymentPackage, ClientError> {
        self.post_entity("deployment_packages", "deploymentPackage", package)
            .await
    }

    /// `GET /deployment_packages`: one page (`params.kinds` filters by kind).
    pub async fn list_deployment_packages(
        &self,
        params: &ListParams,
    ) -> Result<Page<DeploymentPackage>, ClientError> {
        self.list_page("deployment_packages", "deploymentPackages", params, &[])
            .await
    }

    /// Every deployment package from `params.offset` on, across pages.
    pub async fn list_all_deployment_packages(
        &self,
        params: &ListParams,
    ) -> Result<Vec<DeploymentPackage>, ClientError> {
        collect_all(params, async |p: &ListParams| {
            self.list_deployment_packages(p).await
        })
        .await
    }

    /// `GET /deployment_packages/{name}/versions`: every version of one package.
    pub async fn deployment_package_versions(
        &self,
        name: &str,
    ) -> Result<Vec<DeploymentPackage>, ClientError> {
        let url = self.catalog_url(&["deployment_packages", name, "versions"]);
        let mut body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take_list(
            &url,
            &mut body,
            &["deploymentPackages", "deploymentPackage"],
        )
    }

    /// `GET /deployment_packages/{name}/versions/{version}`.
    pub async fn get_deployment_package(
        &self,
        name: &str,
        version: &str,
    ) -> Result<DeploymentPackage, ClientError> {
        self.get_entity(
            &["deployment_packages", name, "versions", version],
            "deploymentPackage",
            &[],
        )
        .await
    }

    /// `PUT /deployment_packages/{name}/versions/{version}`: full replacement.
    pub async fn update_deployment_package(
        &self,
        name: &str,
        version: &str,
        package: &DeploymentPackage,
    ) -> Result<(), ClientError> {
        self.put_entity(&["deployment_packages", name, "versions", version], package)
            .await
    }

    /// `DELETE /deployment_packages/{name}/versions/{version}`.
    pub async fn delete_deployment_package(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(), ClientError> {
        self.delete_entity(&["deployment_packages", name, "versions", version])
            .await
    }

    /// `GET .../download`: the package, its applications and values as a `.tar.gz` that
    /// uploads unchanged into another Canopy.
    pub async fn download_deployment_package(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let url = self.catalog_url(&["deployment_packages", name, "versions", version, "download"]);
        self.execute_bytes(self.request(Method::GET, &url), self.transfer_timeout)
            .await
    }

    // ---- Helm charts ----------------------------------------------------------------------

    /// `POST /import`: imports a Helm chart (the registry, application and package the
    /// server generates). The server fetches the chart, so this waits as long as a transfer.
    /// `chart_values` go in the request body (a Canopy server's extension), so values files
    /// larger than a query string holds work.
    pub async fn import_helm_chart(
        &self,
        req: &ChartImportRequest,
    ) -> Result<ChartImportResponse, ClientError> {
        let url = self.catalog_url(&["import"]);
        let mut query: Vec<(&str, String)> = vec![("url", req.url.clone())];
        if let Some(u) = &req.username {
            query.push(("username", u.clone()));
        }
        if let Some(t) = &req.auth_token {
            query.push(("authToken", t.clone()));
        }
        for (k, on) in [
            ("includeAuth", req.include_auth),
            ("generateDefaultValues", req.generate_default_values),
            ("generateDefaultParameters", req.generate_default_parameters),
        ] {
            if on {
                query.push((k, "true".into()));
            }
        }
        if let Some(ns) = &req.namespace {
            query.push(("namespace", ns.clone()));
        }
        let mut http = self.request(Method::POST, &url).query(&query);
        if let Some(v) = &req.chart_values {
            // In the body (Canopy extension): a query string holds at most about 64 KiB.
            http = http
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(v.clone());
        }
        let body = self.execute_bytes(http, self.transfer_timeout).await?;
        crate::parse_json(&url, &body)
    }

    /// `GET /charts`: the chart names of a HELM registry, or the versions of `chart` (newest
    /// first), one page (`page_size` at most 100), with the total count.
    pub async fn registry_charts(
        &self,
        registry: &str,
        chart: Option<&str>,
        page_size: Option<u32>,
        offset: Option<u32>,
    ) -> Result<Page<String>, ClientError> {
        let url = self.catalog_url(&["charts"]);
        let mut query: Vec<(&str, String)> = vec![("registry", registry.to_string())];
        if let Some(c) = chart {
            query.push(("chart", c.to_string()));
        }
        if let Some(n) = page_size {
            query.push(("pageSize", n.to_string()));
        }
        if let Some(o) = offset {
            query.push(("offset", o.to_string()));
        }
        let req = self.request(Method::GET, &url).query(&query);
        let resp = self.execute(req, self.transfer_timeout).await?;
        let total = resp
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::from_transport(self.base_url(), self.transfer_timeout, e))?;
        let items: Vec<String> = crate::parse_json(&url, &body)?;
        let total = total.unwrap_or(u64::from(offset.unwrap_or(0)) + items.len() as u64);
        Ok(Page { items, total })
    }

    // ---- artifacts ------------------------------------------------------------------------

    /// `POST /artifacts`.
    pub async fn create_artifact(&self, artifact: &Artifact) -> Result<Artifact, ClientError> {
        self.post_entity("artifacts", "artifact", artifact).await
    }

    /// `GET /artifacts`: one page.
    pub async fn list_artifacts(&self, params: &ListParams) -> Result<Page<Artifact>, ClientError> {
        self.list_page("artifacts", "artifacts", params, &[]).await
    }

    /// Every artifact from `params.offset` on, across pages.
    pub async fn list_all_artifacts(
        &self,
        params: &ListParams,
    ) -> Result<Vec<Artifact>, ClientError> {
        collect_all(params, async |p: &ListParams| self.list_artifacts(p).await).await
    }

    /// `GET /artifacts/{name}`.
    pub async fn get_artifact(&self, name: &str) -> Result<Artifact, ClientError> {
        self.get_entity(&["artifacts", name], "artifact", &[]).await
    }

    /// `PUT /artifacts/{name}`: full replacement.
    pub async fn update_artifact(
        &self,
        name: &str,
        artifact: &Artifact,
    ) -> Result<(), ClientError> {
        self.put_entity(&["artifacts", name], artifact).await
    }

    /// `DELETE /artifacts/{name}`.
    pub async fn delete_artifact(&self, name: &str) -> Result<(), ClientError> {
        self.delete_entity(&["artifacts", name]).await
    }
}

fn sensitive(show: bool) -> Vec<(&'static str, String)> {
    if show {
        vec![("showSensitiveInfo", "true".to_owned())]
    } else {
        Vec::new()
    }
}

/// What `POST /import` takes (the reference's query parameters).
#[derive(Clone, Default)]
pub struct ChartImportRequest {
    /// `oci://host[:port]/path/chart[:version]`.
    pub url: String,
    pub username: Option<String>,
    /// Sent in the query string (the reference's contract); never printed.
    pub auth_token: Option<String>,
    pub chart_values: Option<String>,
    pub include_auth: bool,
    pub generate_default_values: bool,
    pub generate_default_parameters: bool,
    pub namespace: Option<String>,
}

impl std::fmt::Debug for ChartImportRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartImportRequest")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("include_auth", &self.include_auth)
            .finish_non_exhaustive()
    }
}

/// The answer to `POST /import`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChartImportResponse {
    pub error_messages: Vec<String>,
    /// What Canopy created, updated or left unchanged (empty from the reference).
    pub changes: Vec<crate::UploadChange>,
}
