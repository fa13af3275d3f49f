//! Reading the audit log (the HTTP layer's audit middleware writes it, see `http::audit`).
//!
//! Administrators read everything. Anyone else reads only the records of one project they can
//! see and hold write access on (catalog or fleet): those are the people accountable for what
//! happens there. A project the caller cannot see is 404, exactly like everywhere else, so the
//! audit log does not disclose project names across tenants.

pub use canopy_store::{AUDIT_DEFAULT_PAGE_SIZE, AUDIT_MAX_PAGE_SIZE, AuditQuery, AuditRecord};

use super::{Access, App, AppError, Principal};

impl App {
    /// One page of the audit log (newest first) and how many records match in all.
    pub async fn audit_log(
        &self,
        principal: &Principal,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditRecord>, u64), AppError> {
        if let Some(size) = query.page_size
            && size > AUDIT_MAX_PAGE_SIZE
        {
            return Err(AppError::Invalid(format!(
                "invalid pageSize {size}: must be at most {AUDIT_MAX_PAGE_SIZE}"
            )));
        }
        // 0 means the default, as in every other list.
        let mut query = query.clone();
        query.page_size = query.page_size.filter(|s| *s > 0);
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since > until
        {
            return Err(AppError::Invalid(
                "invalid since/until: since is after until".into(),
            ));
        }
        if !principal.is_admin() {
            let Some(name) = query.project.as_deref().filter(|p| !p.is_empty()) else {
                return Err(AppError::Forbidden(format!(
                    "{} may not read the whole audit log: it needs administrator access \
                     (role canopy-admin); filter by a project you hold write access on (project=NAME)",
                    principal.actor
                )));
            };
            let not_found = || AppError::NotFound(format!("project {name} not found"));
            let project = self
                .store()
                .project_by_name(name)
                .await?
                .ok_or_else(not_found)?;
            if !principal.sees(&project) {
                return Err(not_found());
            }
            if !principal.may(&project, Access::CatalogWrite)
                && !principal.may(&project, Access::FleetWrite)
            {
                return Err(AppError::Forbidden(format!(
                    "{} may not read the audit log of project {name}: it needs catalog or \
                     deployment write access (role {name}_cat-rw or {name}_ao-rw)",
                    principal.actor
                )));
            }
        }
        Ok(self.store().query_audit(&query).await?)
    }
}
