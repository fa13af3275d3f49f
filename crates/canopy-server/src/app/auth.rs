//! Who may do what: the authenticated caller ([`Principal`]) and the access each operation
//! needs ([`Access`]).
//!
//! Roles are the reference's Keycloak role names, so an existing realm works unchanged:
//! `<project>_cat-r` (catalog read), `<project>_cat-rw` (catalog read and write),
//! `<project>_ao-rw` (deployments, edges and resources, read and write) and `ao-m2m-rw`
//! (machine-to-machine: catalog and deployments of every project). `<project>` is the
//! project's name or its UUID (the reference uses the UUID). Canopy adds two:
//! `<project>_ao-r` (deployments, edges and resources, read only: for site support staff) and
//! `canopy-admin` (everything, including organizations, projects, users and the audit log).
//!
//! A caller with no role at all on a project is told the project does not exist (404), exactly
//! like a missing one: project names are not disclosed across tenants. A caller who can see a
//! project but lacks the access an operation needs gets 403.

use std::sync::Arc;

use canopy_store::Project;
use uuid::Uuid;

use super::AppError;

/// The role that may do everything.
pub const ADMIN_ROLE: &str = "canopy-admin";
/// The reference's machine-to-machine role: catalog and deployments of every project.
pub const M2M_ROLE: &str = "ao-m2m-rw";

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    CatalogRead,
    CatalogWrite,
    /// Deployments, edges, enrollment tokens, workloads: read.
    FleetRead,
    /// Deployments, edges, enrollment tokens, workloads: write.
    FleetWrite,
    /// Organizations, projects, users, every token, the audit log.
    Admin,
    /// Any role on the project (what the project allows, e.g. its policy).
    ProjectRead,
}

impl Access {
    /// What the caller lacks, with the role names of `project` spelled out (`shop_ao-rw`), so
    /// the message says exactly which role to grant.
    fn describe(self, project: &str) -> String {
        match self {
            Access::CatalogRead => {
                format!("catalog read access (role {project}_cat-r or {project}_cat-rw)")
            }
            Access::CatalogWrite => format!("catalog write access (role {project}_cat-rw)"),
            Access::FleetRead => {
                format!("deployment read access (role {project}_ao-rw or {project}_ao-r)")
            }
            Access::FleetWrite => format!("deployment write access (role {project}_ao-rw)"),
            Access::Admin => "administrator access (role canopy-admin)".to_string(),
            Access::ProjectRead => "a role on the project".to_string(),
        }
    }
}

/// How a caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A built-in user, through a session or API token.
    User {
        user_id: Uuid,
        user: String,
        token_id: Uuid,
    },
    /// A token issued by the external OIDC identity provider.
    Oidc { subject: String },
    /// The server itself (startup provisioning, tests of the app layer).
    System,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, as written to the audit log and logs (never a secret).
    pub actor: String,
    pub kind: PrincipalKind,
    roles: Vec<String>,
}

impl Principal {
    /// A built-in user acting through one of their tokens.
    pub fn user(user_id: Uuid, user: &str, token_id: Uuid, roles: Vec<String>) -> Principal {
        Principal {
            actor: user.to_string(),
            kind: PrincipalKind::User {
                user_id,
                user: user.to_string(),
                token_id,
            },
            roles,
        }
    }

    /// A caller authenticated by the OIDC identity provider.
    pub fn oidc(subject: &str, username: Option<&str>, roles: Vec<String>) -> Principal {
        Principal {
            actor: format!("oidc:{}", username.unwrap_or(subject)),
            kind: PrincipalKind::Oidc {
                subject: subject.to_string(),
            },
            roles,
        }
    }

    /// The server itself: every access.
    pub fn system() -> Arc<Principal> {
        Arc::new(Principal {
            actor: "system".to_string(),
            kind: PrincipalKind::System,
            roles: vec![ADMIN_ROLE.to_string()],
        })
    }

    /// The caller's roles.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Whether the caller holds `canopy-admin`.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    fn is_m2m(&self) -> bool {
        self.roles.iter().any(|r| r == M2M_ROLE)
    }

    /// The caller's project-scoped role suffixes on `project` (`cat-r`, `ao-rw`, ...).
    fn project_roles<'a>(&'a self, project: &'a Project) -> impl Iterator<Item = &'a str> + 'a {
        let name = project.name.as_str();
        // Every request asks: compare the UUID form without formatting the project's id.
        self.roles.iter().filter_map(move |r| {
            let (prefix, suffix) = r.rsplit_once('_')?;
            (prefix == name || uuid::Uuid::try_parse(prefix).is_ok_and(|u| u == project.id.0))
                .then_some(suffix)
        })
    }

    /// Whether the caller may know `project` exists.
    pub fn sees(&self, project: &Project) -> bool {
        self.is_admin()
            || self.is_m2m()
            || self
                .project_roles(project)
                .any(|s| matches!(s, "cat-r" | "cat-rw" | "ao-rw" | "ao-r"))
    }

    /// Whether the caller has `access` on `project`.
    pub fn may(&self, project: &Project, access: Access) -> bool {
        if self.is_admin() {
            return true;
        }
        if access == Access::Admin {
            return false;
        }
        if self.is_m2m() {
            return true;
        }
        self.project_roles(project).any(|s| match access {
            Access::CatalogRead => matches!(s, "cat-r" | "cat-rw"),
            Access::CatalogWrite => s == "cat-rw",
            Access::FleetRead => matches!(s, "ao-rw" | "ao-r"),
            Access::FleetWrite => s == "ao-rw",
            Access::Admin => false,
            Access::ProjectRead => matches!(s, "cat-r" | "cat-rw" | "ao-rw" | "ao-r"),
        })
    }

    /// Refuses with 403 unless the caller has `access` on `project`.
    pub fn require(&self, project: &Project, access: Access) -> Result<(), AppError> {
        if self.may(project, access) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "{} may not do this in project {}: it needs {}",
                self.actor,
                project.name,
                access.describe(project.name.as_str())
            )))
        }
    }

    /// Refuses with 403 unless the caller is an administrator.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "{} may not do this: it needs {}",
                self.actor,
                Access::Admin.describe("")
            )))
        }
    }

    /// The key rate limits are counted under: one bucket per token or identity.
    pub fn rate_key(&self) -> String {
        match &self.kind {
            PrincipalKind::User { token_id, .. } => format!("token:{token_id}"),
            PrincipalKind::Oidc { subject } => format!("oidc:{subject}"),
            PrincipalKind::System => "system".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_core::names::ProjectName;
    use canopy_store::ProjectId;

    fn project(name: &str) -> Project {
        Project {
            id: ProjectId(Uuid::new_v4()),
            name: ProjectName::try_from(name).unwrap(),
        }
    }

    fn with_roles(roles: &[&str]) -> Principal {
        Principal::oidc("s", None, roles.iter().map(|r| r.to_string()).collect())
    }

    #[test]
    fn project_roles_match_by_name_or_uuid() {
        let p = project("shop");
        let by_name = with_roles(&["shop_cat-r"]);
        assert!(by_name.sees(&p));
        assert!(by_name.may(&p, Access::CatalogRead));
        assert!(!by_name.may(&p, Access::CatalogWrite));
        assert!(!by_name.may(&p, Access::FleetRead));
        let by_id = with_roles(&[&format!("{}_ao-rw", p.id)]);
        assert!(by_id.may(&p, Access::FleetWrite));
        assert!(!by_id.may(&p, Access::CatalogRead));
    }

    #[test]
    fn other_projects_roles_see_nothing() {
        let p = project("shop");
        let other = with_roles(&[
            "shopx_cat-rw",
            "x_shop_cat-rw",
            "shop-cat-rw",
            "shop_cat-rwx",
        ]);
        assert!(!other.sees(&p));
        for a in [
            Access::CatalogRead,
            Access::CatalogWrite,
            Access::FleetRead,
            Access::FleetWrite,
            Access::Admin,
        ] {
            assert!(!other.may(&p, a), "{a:?}");
        }
    }

    #[test]
    fn m2m_is_everything_but_admin_and_admin_is_everything() {
        let p = project("shop");
        let m2m = with_roles(&[M2M_ROLE]);
        assert!(m2m.may(&p, Access::CatalogWrite) && m2m.may(&p, Access::FleetWrite));
        assert!(!m2m.may(&p, Access::Admin));
        assert!(m2m.require_admin().is_err());
        let admin = with_roles(&[ADMIN_ROLE]);
        assert!(admin.may(&p, Access::Admin) && admin.require_admin().is_ok());
    }

    #[test]
    fn read_only_fleet_role_cannot_write() {
        let p = project("shop");
        let ro = with_roles(&["shop_ao-r"]);
        assert!(ro.may(&p, Access::FleetRead));
        let err = ro.require(&p, Access::FleetWrite).unwrap_err();
        assert!(matches!(err, AppError::Forbidden(_)));
        assert!(err.to_string().contains("shop"), "{err}");
    }
}
