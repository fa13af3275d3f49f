//! Tenancy: organizations and the projects they own, compatible with the reference's tenancy
//! API (`/v1/orgs/{org}`, `/v1/projects/{project}`).
//!
//! Creating a project provisions the configured default registries (what the reference's
//! tenant controller does on a project-create event). Deleting a project removes all of it:
//! its deployments first (edges are told at once and get a few seconds to remove the
//! workloads), then in one transaction its catalog, edges, enrollment tokens and upload
//! sessions; built-in users lose their roles on it, so a project re-created under the same name
//! does not inherit old grants.

use std::time::{Duration, Instant};

use canopy_core::catalog::Registry;
use canopy_core::names::ProjectName;
use canopy_deploy::model::DeleteType;
use canopy_store::{OrgDelete, ProjectPut, ProjectRecord, Put};
use serde::Serialize;

use super::fleet_tx::{FleetTx, HubOp};
use super::{App, AppError, Ctx, Principal};

/// The organization that exists from the first start and owns the default project.
pub const DEFAULT_ORG: &str = "default";

/// What a new project gets.
#[derive(Debug, Clone, Default)]
pub struct TenancyConfig {
    /// Registries created in every new project (the reference provisions its Release Service
    /// and Harbor registries this way).
    pub default_registries: Vec<Registry>,
    /// How long deleting a project waits for connected edges to remove its workloads.
    pub delete_grace: Option<Duration>,
}

/// The status block of the reference's tenancy objects.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenancyStatus {
    pub message: String,
    pub status_indicator: String,
    pub time_stamp: i64,
    #[serde(rename = "uID")]
    #[schema(rename = "uID")]
    pub uid: String,
}

/// An organization or project as the tenancy API shows it.
#[derive(Debug, Clone)]
pub struct TenancyObject {
    pub name: String,
    pub description: String,
    pub org: Option<String>,
    pub status: TenancyStatus,
}

fn status(kind: &str, name: &str, uid: String, created: time::OffsetDateTime) -> TenancyStatus {
    TenancyStatus {
        message: format!("{kind} {name} is ready"),
        status_indicator: "STATUS_INDICATION_IDLE".to_string(),
        time_stamp: created.unix_timestamp(),
        uid,
    }
}

fn project_object(r: ProjectRecord) -> TenancyObject {
    TenancyObject {
        status: status(
            "Project",
            r.project.name.as_str(),
            r.project.id.to_string(),
            r.create_time,
        ),
        name: r.project.name.as_str().to_string(),
        description: r.description,
        org: r.org,
    }
}

fn check_description(d: &str) -> Result<(), AppError> {
    if d.chars().count() > 2048 || d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(AppError::Invalid(
            "description must be at most 2048 characters without control characters".into(),
        ));
    }
    Ok(())
}

fn check_org_name(name: &str) -> Result<(), AppError> {
    ProjectName::try_from(name)
        .map(|_| ())
        .map_err(|e| AppError::Invalid(format!("organization name: {e}")))
}

impl App {
    /// Makes sure the default organization exists and owns projects from before organizations.
    pub(crate) async fn ensure_default_org(&self) -> Result<(), AppError> {
        if self.store().org(DEFAULT_ORG).await?.is_none() {
            self.store().put_org(DEFAULT_ORG, "", false).await?;
        }
        self.store().adopt_orphan_projects(DEFAULT_ORG).await?;
        Ok(())
    }

    // ------------------------------------------------------------------ organizations

    /// Creates or updates an organization (administrators).
    pub async fn put_org(
        &self,
        p: &Principal,
        name: &str,
        description: &str,
        update_if_exists: bool,
    ) -> Result<Put, AppError> {
        p.require_admin()?;
        check_org_name(name)?;
        check_description(description)?;
        let (_, put) = self
            .store()
            .put_org(name, description, update_if_exists)
            .await?;
        if put == Put::Exists {
            return Err(AppError::AlreadyExists(format!(
                "organization {name} already exists"
            )));
        }
        tracing::info!(org = %name, by = %p.actor, ?put, "organization saved");
        Ok(put)
    }

    /// Organizations the caller can see: all for administrators, else those owning a project
    /// the caller has a role on.
    pub async fn list_orgs(&self, p: &Principal) -> Result<Vec<TenancyObject>, AppError> {
        let visible: Option<Vec<String>> = if p.is_admin() {
            None
        } else {
            Some(
                self.store()
                    .list_project_records()
                    .await?
                    .into_iter()
                    .filter(|r| p.sees(&r.project))
                    .filter_map(|r| r.org)
                    .collect(),
            )
        };
        Ok(self
            .store()
            .list_orgs()
            .await?
            .into_iter()
            .filter(|o| visible.as_ref().is_none_or(|v| v.contains(&o.name)))
            .map(|o| TenancyObject {
                status: status("Org", &o.name, o.id.to_string(), o.create_time),
                name: o.name,
                description: o.description,
                org: None,
            })
            .collect())
    }

    /// One organization (404 when unknown or not visible).
    pub async fn get_org(&self, p: &Principal, name: &str) -> Result<TenancyObject, AppError> {
        self.list_orgs(p)
            .await?
            .into_iter()
            .find(|o| o.name == name)
            .ok_or_else(|| AppError::NotFound(format!("organization {name} not found")))
    }

    /// Deletes an organization that owns no project (administrators).
    pub async fn delete_org(&self, p: &Principal, name: &str) -> Result<(), AppError> {
        p.require_admin()?;
        match self.store().delete_org(name).await? {
            OrgDelete::Deleted => {
                tracing::info!(org = %name, by = %p.actor, "organization deleted");
                Ok(())
            }
            OrgDelete::NotFound => {
                Err(AppError::NotFound(format!("organization {name} not found")))
            }
            OrgDelete::HasProjects(projects) => Err(AppError::FailedPrecondition(format!(
                "organization {name} still owns project(s) {}: delete them first",
                projects.join(", ")
            ))),
        }
    }

    // ------------------------------------------------------------------ projects

    /// Creates or updates a project in `org` (default: the default organization), and on
    /// creation provisions the default registries (administrators).
    pub async fn put_project(
        &self,
        p: &Principal,
        name: &str,
        org: Option<&str>,
        description: &str,
        update_if_exists: bool,
    ) -> Result<Put, AppError> {
        p.require_admin()?;
        let project_name = ProjectName::try_from(name)
            .map_err(|e| AppError::Invalid(format!("project name: {e}")))?;
        check_description(description)?;
        let org = org.unwrap_or(DEFAULT_ORG);
        let (record, put) = match self
            .store()
            .put_project(&project_name, org, description, update_if_exists)
            .await?
        {
            ProjectPut::Done(r, Put::Exists) => {
                return Err(AppError::AlreadyExists(format!(
                    "project {} already exists",
                    r.project.name
                )));
            }
            ProjectPut::Done(r, put) => (r, put),
            ProjectPut::NoSuchOrg => {
                return Err(AppError::NotFound(format!("organization {org} not found")));
            }
            ProjectPut::OtherOrg(other) => {
                return Err(AppError::AlreadyExists(format!(
                    "project {name} already exists in organization {other}"
                )));
            }
        };
        if put == Put::Created {
            let ctx = Ctx {
                project: record.project.clone(),
                principal: Principal::system(),
                request_id: "provision".into(),
            };
            for r in &self.inner.tenancy.default_registries {
                if let Err(e) = self.create_registry(&ctx, r.clone()).await {
                    // The project exists either way; say what is missing instead of undoing it.
                    tracing::warn!(project = %name, registry = %r.name, error = %e, "could not provision a default registry");
                    return Err(AppError::Internal(format!(
                        "project {name} was created but default registry {} could not be provisioned: {e}",
                        r.name
                    )));
                }
            }
        }
        tracing::info!(project = %name, org = %org, by = %p.actor, ?put, "project saved");
        Ok(put)
    }

    /// One project (404 when unknown or not visible).
    pub async fn get_project(&self, p: &Principal, name: &str) -> Result<TenancyObject, AppError> {
        let not_found = || AppError::NotFound(format!("project {name} not found"));
        let r = self
            .store()
            .project_record(name)
            .await?
            .ok_or_else(not_found)?;
        if !p.sees(&r.project) {
            return Err(not_found());
        }
        Ok(project_object(r))
    }

    /// The projects the caller can see.
    pub async fn list_projects(&self, p: &Principal) -> Result<Vec<TenancyObject>, AppError> {
        Ok(self
            .store()
            .list_project_records()
            .await?
            .into_iter()
            .filter(|r| p.sees(&r.project))
            .map(project_object)
            .collect())
    }

    /// Deletes a project and everything in it (administrators).
    pub async fn delete_project(&self, p: &Principal, name: &str) -> Result<(), AppError> {
        p.require_admin()?;
        let not_found = || AppError::NotFound(format!("project {name} not found"));
        let record = self
            .store()
            .project_record(name)
            .await?
            .ok_or_else(not_found)?;
        let project = record.project;
        let ctx = Ctx {
            project: project.clone(),
            principal: Principal::system(),
            request_id: "project-delete".into(),
        };
        // 1. Deployments, roots first (children go with their parents), so edges are told.
        loop {
            let roots: Vec<String> = self
                .hub()
                .deployments(project.id)
                .iter()
                .filter(|d| d.parents.is_empty())
                .map(|d| d.id.clone())
                .collect();
            if roots.is_empty() {
                break;
            }
            for id in roots {
                match self.delete_deployment(&ctx, &id, DeleteType::All).await {
                    Ok(()) | Err(AppError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // 2. Connected edges get a moment to remove the workloads.
        let grace = self
            .inner
            .tenancy
            .delete_grace
            .unwrap_or(Duration::from_secs(10));
        let started = Instant::now();
        while self.hub().unconfirmed_edges(project.id) > 0 && started.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let unconfirmed = self.hub().unconfirmed_edges(project.id);
        if unconfirmed > 0 {
            tracing::warn!(project = %name, edges = unconfirmed, "deleting the project before some connected edges confirmed removing its workloads");
        }
        // 3. Everything else, in one fleet transaction (every replica forgets the project).
        let mut tx = match FleetTx::open(self, project.id).await {
            Ok(tx) => tx,
            Err(AppError::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(e),
        };
        if !tx.delete_project().await? {
            return Err(not_found());
        }
        // Applying it fails the edges' tunnels and forgets the project.
        tx.record(HubOp::RemoveProject);
        tx.commit().await?;
        // 4. Grants on the project go too.
        let prefixes = [
            format!("{}_", project.name.as_str()),
            format!("{}_", project.id),
        ];
        for u in self.store().list_users().await? {
            let kept: Vec<String> = u
                .roles
                .iter()
                .filter(|r| {
                    !prefixes
                        .iter()
                        .any(|pre| r.starts_with(pre.as_str()) && !r[pre.len()..].contains('_'))
                })
                .cloned()
                .collect();
            if kept.len() != u.roles.len() {
                self.store().update_user(&u.name, Some(&kept), None).await?;
            }
        }
        self.drop_cached_tokens().await;
        tracing::info!(project = %name, by = %p.actor, "project deleted");
        Ok(())
    }
}

/// The shared part of the answer to a put.
pub fn put_message(kind: &str, name: &str, put: Put) -> String {
    match put {
        Put::Created => format!("{kind} {name} created"),
        Put::Updated | Put::Exists => format!("{kind} {name} updated"),
    }
}
