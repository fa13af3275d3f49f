//! Identity and tenancy: `login`, `whoami`, built-in users, API tokens (Canopy's own paths under
//! `/canopy/v1/`) and organizations and projects (the reference's tenancy paths `/v1/orgs`,
//! `/v1/projects`). Shapes mirror the server's JSON, leniently.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Client, ClientError, take_list};

/// A token the server issued (its secret is only in `token`, and only once).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub id: String,
    pub name: String,
    pub user: String,
    pub kind: String,
    #[serde(default)]
    pub create_time: String,
    #[serde(default)]
    pub expire_time: String,
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A token as lists show it (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub create_time: String,
    #[serde(default)]
    pub expire_time: String,
}

/// A built-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub has_password: bool,
    #[serde(default)]
    pub create_time: String,
    #[serde(default)]
    pub update_time: String,
}

/// The caller as the server sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub actor: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// An organization or project of the tenancy API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub name: String,
    pub description: String,
    /// A project's organization.
    pub org: Option<String>,
    /// `statusIndicator` of the status block.
    pub status: String,
    /// The object's UUID.
    pub uid: String,
}

fn tenant(v: &Value, status_key: &str) -> Tenant {
    let st = &v["status"][status_key];
    Tenant {
        name: v["name"].as_str().unwrap_or_default().to_string(),
        description: v["spec"]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        org: v["spec"]["org"].as_str().map(str::to_string),
        status: st["statusIndicator"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        uid: st["uID"].as_str().unwrap_or_default().to_string(),
    }
}

impl Client {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let url = self.url(segments);
        let mut req = self.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v = self.execute_json(req, &url).await?;
        serde_json::from_value(v).map_err(|e| crate::decode_err(&url, e))
    }

    async fn call_empty(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(), ClientError> {
        let url = self.url(segments);
        let mut req = self.request(method, &url).query(query);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.execute(req, self.timeout).await?;
        Ok(())
    }

    // ---- sessions ---------------------------------------------------------------------------

    /// `POST /canopy/v1/login`: a session token for a built-in user.
    pub async fn login(&self, user: &str, password: &str) -> Result<IssuedToken, ClientError> {
        self.call(
            Method::POST,
            &["canopy", "v1", "login"],
            Some(json!({ "username": user, "password": password })),
        )
        .await
    }

    /// `POST /canopy/v1/logout`: revokes the session token this client uses.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call_empty(Method::POST, &["canopy", "v1", "logout"], &[], None)
            .await
    }

    /// `GET /canopy/v1/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.call(Method::GET, &["canopy", "v1", "whoami"], None)
            .await
    }

    // ---- users ------------------------------------------------------------------------------

    /// `GET /canopy/v1/users`.
    pub async fn list_users(&self) -> Result<Vec<User>, ClientError> {
        let url = self.url(&["canopy", "v1", "users"]);
        let mut v = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take_list(&url, &mut v, &["users"])
    }

    /// `POST /canopy/v1/users`.
    pub async fn create_user(
        &self,
        name: &str,
        password: Option<&str>,
        roles: &[String],
    ) -> Result<User, ClientError> {
        self.call(
            Method::POST,
            &["canopy", "v1", "users"],
            Some(json!({ "name": name, "password": password, "roles": roles })),
        )
        .await
    }

    /// `PATCH /canopy/v1/users/{user}`: new roles and/or password (`None` = unchanged).
    pub async fn update_user(
        &self,
        name: &str,
        roles: Option<&[String]>,
        password: Option<&str>,
    ) -> Result<User, ClientError> {
        self.call(
            Method::PATCH,
            &["canopy", "v1", "users", name],
            Some(json!({ "roles": roles, "password": password })),
        )
        .await
    }

    /// `GET /canopy/v1/users/{user}` (administrators: anyone; users: themselves).
    pub async fn get_user(&self, name: &str) -> Result<User, ClientError> {
        self.call(Method::GET, &["canopy", "v1", "users", name], None)
            .await
    }

    /// `PATCH /canopy/v1/users/{user}` with a new password; `current_password` is required when
    /// users change their own (and have one), not when an administrator sets someone else's.
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
        current_password: Option<&str>,
    ) -> Result<User, ClientError> {
        self.call(
            Method::PATCH,
            &["canopy", "v1", "users", name],
            Some(json!({ "password": password, "currentPassword": current_password })),
        )
        .await
    }

    /// `DELETE /canopy/v1/users/{user}`.
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["canopy", "v1", "users", name], &[], None)
            .await
    }

    // ---- API tokens -------------------------------------------------------------------------

    /// `POST /canopy/v1/tokens`.
    pub async fn create_api_token(
        &self,
        name: &str,
        expires_in_seconds: Option<u64>,
        user: Option<&str>,
    ) -> Result<IssuedToken, ClientError> {
        self.call(
            Method::POST,
            &["canopy", "v1", "tokens"],
            Some(json!({ "name": name, "expiresInSeconds": expires_in_seconds, "user": user })),
        )
        .await
    }

    /// `GET /canopy/v1/tokens` (`all`: every user's, administrators only).
    pub async fn list_api_tokens(&self, all: bool) -> Result<Vec<ApiToken>, ClientError> {
        let url = self.url(&["canopy", "v1", "tokens"]);
        let req = self
            .request(Method::GET, &url)
            .query(&[("all", if all { "true" } else { "false" })]);
        let mut v = self.execute_json(req, &url).await?;
        take_list(&url, &mut v, &["tokens"])
    }

    /// `DELETE /canopy/v1/tokens/{id}`.
    pub async fn revoke_api_token(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["canopy", "v1", "tokens", id], &[], None)
            .await
    }

    // ---- tenancy ----------------------------------------------------------------------------

    /// `PUT /v1/orgs/{org}`.
    pub async fn put_org(&self, name: &str, description: &str) -> Result<(), ClientError> {
        self.call_empty(
            Method::PUT,
            &["v1", "orgs", name],
            &[],
            Some(json!({ "description": description })),
        )
        .await
    }

    /// `GET /v1/orgs`.
    pub async fn list_orgs(&self) -> Result<Vec<Tenant>, ClientError> {
        let v: Vec<Value> = self.call(Method::GET, &["v1", "orgs"], None).await?;
        Ok(v.iter().map(|o| tenant(o, "orgStatus")).collect())
    }

    /// `DELETE /v1/orgs/{org}`.
    pub async fn delete_org(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["v1", "orgs", name], &[], None)
            .await
    }

    /// `PUT /v1/projects/{project}?org=`.
    pub async fn put_project(
        &self,
        name: &str,
        org: Option<&str>,
        description: &str,
    ) -> Result<(), ClientError> {
        let query: Vec<(&str, &str)> = org.map(|o| ("org", o)).into_iter().collect();
        self.call_empty(
            Method::PUT,
            &["v1", "projects", name],
            &query,
            Some(json!({ "description": description })),
        )
        .await
    }

    /// `GET /v1/projects`.
    pub async fn list_projects(&self) -> Result<Vec<Tenant>, ClientError> {
        let v: Vec<Value> = self.call(Method::GET, &["v1", "projects"], None).await?;
        Ok(v.iter().map(|p| tenant(p, "projectStatus")).collect())
    }

    /// `GET /v1/projects/{project}`.
    pub async fn get_project(&self, name: &str) -> Result<Tenant, ClientError> {
        let mut v: Value = self
            .call(Method::GET, &["v1", "projects", name], None)
            .await?;
        v["name"] = Value::String(name.to_string());
        Ok(tenant(&v, "projectStatus"))
    }

    /// `DELETE /v1/projects/{project}`: the project and everything in it.
    pub async fn delete_project(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["v1", "projects", name], &[], None)
            .await
    }
}
