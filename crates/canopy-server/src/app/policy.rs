//! The project policy (`canopy_core::policy`): reading and setting it. The policy is enforced
//! where apps are rendered for edges (`deployments.rs` through `canopy-deploy`), in the same
//! project write transaction as the deployment rows, so a deployment is checked against the
//! policy that holds when it commits.
//!
//! Who: everyone with a role on the project may read the policy (it says why a deployment was
//! refused); only an administrator may set it, because it restricts what the project's catalog
//! writers (templates) and deployers (override values) can make its edges do. Setting it does
//! not touch running deployments: they keep what they were rendered with, and their next
//! create, update or upgrade is checked.

use std::sync::Arc;

use canopy_core::policy::ProjectPolicy;
use time::OffsetDateTime;

use super::{Access, App, AppError, Ctx, Principal};

impl App {
    /// The project's policy: the one set, else the default.
    pub async fn get_project_policy(&self, ctx: &Ctx) -> Result<ProjectPolicy, AppError> {
        ctx.require(Access::ProjectRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        Ok(tx
            .get_project_policy()
            .await?
            .map(|(p, _)| p)
            .unwrap_or_default())
    }

    /// Sets the project's policy (administrators only: refused with 403 before the project is
    /// looked up, so the answer is the same for a missing project). Returns what was stored.
    pub async fn put_project_policy(
        &self,
        principal: Arc<Principal>,
        project: &str,
        request_id: String,
        policy: ProjectPolicy,
    ) -> Result<ProjectPolicy, AppError> {
        principal.require_admin()?;
        let ctx = self.context(principal, project, request_id).await?;
        ctx.require(Access::Admin)?;
        policy
            .check()
            .map_err(|e| AppError::Invalid(format!("policy {e}")))?;
        let mut tx = self.store().write(ctx.project.id).await?;
        tx.put_project_policy(&policy, OffsetDateTime::now_utc())
            .await?;
        tx.commit().await?;
        tracing::info!(project = %ctx.project.name, actor = %ctx.principal.actor, "project policy set");
        Ok(policy)
    }
}
