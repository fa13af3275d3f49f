//! Tenancy and identity storage: organizations, project ownership, built-in users and the
//! server-issued tokens they authenticate with.
//!
//! These are administrative rows, written rarely and outside any project's catalog
//! transaction; on SQLite every write here still takes the store's write lock so it never
//! waits on SQLite's file lock behind a long catalog transaction. Deleting a project deletes
//! every row that belongs to it in one statement: the catalog and fleet tables reference
//! `projects` with `ON DELETE CASCADE`.
//!
//! Passwords arrive here already hashed (argon2id) and tokens as SHA-256 hex: this crate never
//! sees a secret in a form that could be presented back to the server.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::sql::{format_time, now, parse_time};
use crate::{Backend, Project, ProjectId, Store, StoreError};

/// An organization: the owner of projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub create_time: OffsetDateTime,
}

/// A project with its tenancy attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    pub project: Project,
    /// The owning organization's name (`None` only for rows from before organizations).
    pub org: Option<String>,
    pub description: String,
    pub create_time: OffsetDateTime,
}

/// A built-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: Uuid,
    pub name: String,
    /// argon2id PHC string; `None` when the user cannot log in with a password (API tokens only).
    pub password_hash: Option<String>,
    /// Role names as the reference spells them (`<project>_cat-r`, `ao-m2m-rw`, ...).
    pub roles: Vec<String>,
    pub create_time: OffsetDateTime,
    pub update_time: OffsetDateTime,
}

/// A server-issued token (session or API token). Only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: Uuid,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    pub user_id: Uuid,
    pub name: String,
    /// `session`, `api` or `bootstrap`.
    pub kind: String,
    pub create_time: OffsetDateTime,
    pub expire_time: Option<OffsetDateTime>,
}

/// What [`Store::reset_admin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminReset {
    pub user_id: Uuid,
    /// The user did not exist and was created.
    pub created: bool,
    /// The user existed without the administrator role and was given it back.
    pub role_restored: bool,
    /// Bootstrap tokens revoked.
    pub revoked: u64,
}

/// What a put (create-or-update) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Updated,
    /// The row exists and updating was not allowed (`update_if_exists=false`).
    Exists,
}

fn uuid_col(row: &AnyRow, col: &str) -> Result<Uuid, StoreError> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(format!("bad id {s:?} in {col}: {e}")))
}

fn org_from_row(row: &AnyRow) -> Result<Org, StoreError> {
    Ok(Org {
        id: uuid_col(row, "id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        create_time: parse_time(&row.try_get::<String, _>("create_time")?)?,
    })
}

fn project_record_from_row(row: &AnyRow) -> Result<ProjectRecord, StoreError> {
    let name: String = row.try_get("name")?;
    Ok(ProjectRecord {
        project: Project {
            id: ProjectId(uuid_col(row, "id")?),
            name: canopy_core::names::ProjectName::try_from(name.as_str())
                .map_err(|e| StoreError::Corrupt(format!("bad project name {name:?}: {e}")))?,
        },
        org: row.try_get("org_name")?,
        description: row.try_get("description")?,
        create_time: parse_time(&row.try_get::<String, _>("create_time")?)?,
    })
}

fn user_from_row(row: &AnyRow) -> Result<UserRow, StoreError> {
    let roles: String = row.try_get("roles")?;
    Ok(UserRow {
        id: uuid_col(row, "id")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        roles: serde_json::from_str(&roles)
            .map_err(|e| StoreError::Corrupt(format!("bad roles of a user: {e}")))?,
        create_time: parse_time(&row.try_get::<String, _>("create_time")?)?,
        update_time: parse_time(&row.try_get::<String, _>("update_time")?)?,
    })
}

fn token_from_row(row: &AnyRow) -> Result<TokenRow, StoreError> {
    let expire: Option<String> = row.try_get("expire_time")?;
    Ok(TokenRow {
        id: uuid_col(row, "id")?,
        token_hash: row.try_get("token_hash")?,
        user_id: uuid_col(row, "user_id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        create_time: parse_time(&row.try_get::<String, _>("create_time")?)?,
        expire_time: expire.as_deref().map(parse_time).transpose()?,
    })
}

const PROJECT_COLUMNS: &str = "SELECT p.id, p.name, p.description, p.create_time, o.name AS org_name \
     FROM projects p LEFT JOIN orgs o ON o.id = p.org_id";
const TOKEN_COLUMNS: &str =
    "SELECT id, token_hash, user_id, name, kind, create_time, expire_time FROM api_tokens";
const USER_COLUMNS: &str =
    "SELECT id, name, password_hash, roles, create_time, update_time FROM users";

impl Store {
    async fn admin_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    // ---------------------------------------------------------------- organizations

    /// Creates the organization, or updates its description when it exists and `update` is set.
    pub async fn put_org(
        &self,
        name: &str,
        description: &str,
        update: bool,
    ) -> Result<(Org, Put), StoreError> {
        let _guard = self.admin_lock().await;
        let mut tx = self.pool.begin().await?;
        let existing =
            sqlx::query("SELECT id, name, description, create_time FROM orgs WHERE name = $1")
                .bind(name.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let put = match existing {
            Some(_) if !update => Put::Exists,
            Some(_) => {
                sqlx::query("UPDATE orgs SET description = $2 WHERE name = $1")
                    .bind(name.to_string())
                    .bind(description.to_string())
                    .execute(&mut *tx)
                    .await?;
                Put::Updated
            }
            None => {
                sqlx::query(
                    "INSERT INTO orgs (id, name, description, create_time) VALUES ($1, $2, $3, $4)",
                )
                .bind(Uuid::new_v4().to_string())
                .bind(name.to_string())
                .bind(description.to_string())
                .bind(format_time(now()))
                .execute(&mut *tx)
                .await?;
                Put::Created
            }
        };
        let row =
            sqlx::query("SELECT id, name, description, create_time FROM orgs WHERE name = $1")
                .bind(name.to_string())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((org_from_row(&row)?, put))
    }

    /// The organization of that name.
    pub async fn org(&self, name: &str) -> Result<Option<Org>, StoreError> {
        sqlx::query("SELECT id, name, description, create_time FROM orgs WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(org_from_row)
            .transpose()
    }

    /// All organizations, by name.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows = sqlx::query("SELECT id, name, description, create_time FROM orgs ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(org_from_row).collect()
    }

    /// Deletes an organization that owns no project. Returns `Err(n)`-like information through
    /// [`OrgDelete`].
    pub async fn delete_org(&self, name: &str) -> Result<OrgDelete, StoreError> {
        let _guard = self.admin_lock().await;
        let mut tx = self.pool.begin().await?;
        let Some(org) = sqlx::query("SELECT id FROM orgs WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(OrgDelete::NotFound);
        };
        let id: String = org.try_get("id")?;
        let projects = sqlx::query("SELECT name FROM projects WHERE org_id = $1 ORDER BY name")
            .bind(id.clone())
            .fetch_all(&mut *tx)
            .await?;
        if !projects.is_empty() {
            let names = projects
                .iter()
                .map(|r| r.try_get::<String, _>("name"))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(OrgDelete::HasProjects(names));
        }
        sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(OrgDelete::Deleted)
    }

    // ---------------------------------------------------------------- projects

    /// Creates a project in `org`, or updates its description when it exists and `update` is
    /// set. A project never moves between organizations: putting an existing project under
    /// another organization is reported as [`ProjectPut::OtherOrg`].
    pub async fn put_project(
        &self,
        name: &canopy_core::names::ProjectName,
        org: &str,
        description: &str,
        update: bool,
    ) -> Result<ProjectPut, StoreError> {
        let _guard = self.admin_lock().await;
        let mut tx = self.pool.begin().await?;
        let Some(org_row) = sqlx::query("SELECT id FROM orgs WHERE name = $1")
            .bind(org.to_string())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(ProjectPut::NoSuchOrg);
        };
        let org_id: String = org_row.try_get("id")?;
        let sql = format!("{PROJECT_COLUMNS} WHERE p.name = $1");
        let existing = sqlx::query(&sql)
            .bind(name.as_str().to_string())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(project_record_from_row)
            .transpose()?;
        let put = match existing {
            Some(p) if p.org.as_deref().is_some_and(|o| o != org) => {
                return Ok(ProjectPut::OtherOrg(p.org.unwrap_or_default()));
            }
            Some(_) if !update => Put::Exists,
            Some(_) => {
                sqlx::query("UPDATE projects SET description = $2, org_id = $3 WHERE name = $1")
                    .bind(name.as_str().to_string())
                    .bind(description.to_string())
                    .bind(org_id)
                    .execute(&mut *tx)
                    .await?;
                Put::Updated
            }
            None => {
                sqlx::query("INSERT INTO projects (id, name, create_time, org_id, description) VALUES ($1, $2, $3, $4, $5)")
                    .bind(Uuid::new_v4().to_string())
                    .bind(name.as_str().to_string())
                    .bind(format_time(now()))
                    .bind(org_id)
                    .bind(description.to_string())
                    .execute(&mut *tx)
                    .await?;
                Put::Created
            }
        };
        let row = sqlx::query(&sql)
            .bind(name.as_str().to_string())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ProjectPut::Done(project_record_from_row(&row)?, put))
    }

    /// Puts projects that predate organizations (the default project) into `org`.
    pub async fn adopt_orphan_projects(&self, org: &str) -> Result<u64, StoreError> {
        let _guard = self.admin_lock().await;
        let done = sqlx::query(
            "UPDATE projects SET org_id = (SELECT id FROM orgs WHERE name = $1) WHERE org_id IS NULL",
        )
        .bind(org.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// A project with its tenancy attributes.
    pub async fn project_record(&self, name: &str) -> Result<Option<ProjectRecord>, StoreError> {
        let sql = format!("{PROJECT_COLUMNS} WHERE p.name = $1");
        sqlx::query(&sql)
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(project_record_from_row)
            .transpose()
    }

    /// Every project with its tenancy attributes, by name.
    pub async fn list_project_records(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        let sql = format!("{PROJECT_COLUMNS} ORDER BY p.name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(project_record_from_row).collect()
    }

    /// Deletes a project and everything in it (catalog, upload sessions, deployments, edges,
    /// enrollment tokens) in one transaction. Returns false when it did not exist.
    pub async fn delete_project(&self, id: ProjectId) -> Result<bool, StoreError> {
        let _guard = self.admin_lock().await;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Waits for the project's catalog writers (they hold this row lock).
            sqlx::query("SELECT id FROM projects WHERE id = $1 FOR UPDATE")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        }
        // Upload files reference sessions, not projects: delete them first.
        sqlx::query("DELETE FROM upload_files WHERE session_id IN (SELECT id FROM upload_sessions WHERE project_id = $1)")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---------------------------------------------------------------- users

    /// Creates a user; `Ok(None)` when the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: Option<&str>,
        roles: &[String],
    ) -> Result<Option<UserRow>, StoreError> {
        let _guard = self.admin_lock().await;
        let t = format_time(now());
        let done = sqlx::query("INSERT INTO users (id, name, password_hash, roles, create_time, update_time) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING")
            .bind(Uuid::new_v4().to_string())
            .bind(name.to_string())
            .bind(password_hash.map(str::to_string))
            .bind(roles_json(roles)?)
            .bind(t)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        drop(_guard);
        self.user_by_name(name).await
    }

    /// The user of that name.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("{USER_COLUMNS} WHERE name = $1");
        sqlx::query(&sql)
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// The user with that id.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("{USER_COLUMNS} WHERE id = $1");
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// All users, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let sql = format!("{USER_COLUMNS} ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Changes a user's roles and/or password hash (`None` = unchanged). Returns the new row.
    pub async fn update_user(
        &self,
        name: &str,
        roles: Option<&[String]>,
        password_hash: Option<&str>,
    ) -> Result<Option<UserRow>, StoreError> {
        {
            let _guard = self.admin_lock().await;
            let mut tx = self.pool.begin().await?;
            let t = format_time(now());
            if let Some(roles) = roles {
                sqlx::query("UPDATE users SET roles = $2, update_time = $3 WHERE name = $1")
                    .bind(name.to_string())
                    .bind(roles_json(roles)?)
                    .bind(t.clone())
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(hash) = password_hash {
                sqlx::query(
                    "UPDATE users SET password_hash = $2, update_time = $3 WHERE name = $1",
                )
                .bind(name.to_string())
                .bind(hash.to_string())
                .bind(t)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        self.user_by_name(name).await
    }

    /// Deletes a user and every token of theirs. Returns false when there was none.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let _guard = self.admin_lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE name = $1)",
        )
        .bind(name.to_string())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---------------------------------------------------------------- tokens

    /// Stores a new token (its hash).
    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        let _guard = self.admin_lock().await;
        sqlx::query("INSERT INTO api_tokens (id, token_hash, user_id, name, kind, create_time, expire_time) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(t.id.to_string())
            .bind(t.token_hash.clone())
            .bind(t.user_id.to_string())
            .bind(t.name.clone())
            .bind(t.kind.clone())
            .bind(format_time(t.create_time))
            .bind(t.expire_time.map(format_time))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The token with that hash, with its user.
    pub async fn token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<(TokenRow, UserRow)>, StoreError> {
        let sql = format!("{TOKEN_COLUMNS} WHERE token_hash = $1");
        let Some(token) = sqlx::query(&sql)
            .bind(hash.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(self.user_by_id(token.user_id).await?.map(|u| (token, u)))
    }

    /// Tokens of one user (or of everyone), newest first.
    pub async fn list_tokens(&self, user: Option<Uuid>) -> Result<Vec<TokenRow>, StoreError> {
        let rows = match user {
            Some(u) => {
                let sql =
                    format!("{TOKEN_COLUMNS} WHERE user_id = $1 ORDER BY create_time DESC, id");
                sqlx::query(&sql)
                    .bind(u.to_string())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!("{TOKEN_COLUMNS} ORDER BY create_time DESC, id");
                sqlx::query(&sql).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(token_from_row).collect()
    }

    /// The token with that id.
    pub async fn token_by_id(&self, id: Uuid) -> Result<Option<TokenRow>, StoreError> {
        let sql = format!("{TOKEN_COLUMNS} WHERE id = $1");
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    /// Revokes (deletes) a token. Returns false when there was none.
    pub async fn delete_token(&self, id: Uuid) -> Result<bool, StoreError> {
        let _guard = self.admin_lock().await;
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes the built-in user `name` a working administrator again, in one transaction: the
    /// user is created when missing, given `admin_role` when it lacks it, its tokens of kind
    /// `bootstrap` are revoked and `token` (a new bootstrap token; its `user_id` is filled in
    /// here) is stored. For the offline recovery `canopy admin reset-token`.
    pub async fn reset_admin(
        &self,
        name: &str,
        admin_role: &str,
        mut token: TokenRow,
    ) -> Result<AdminReset, StoreError> {
        let _guard = self.admin_lock().await;
        let mut tx = self.pool.begin().await?;
        let t = format_time(now());
        let sql = format!("{USER_COLUMNS} WHERE name = $1");
        let existing = sqlx::query(&sql)
            .bind(name.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()?;
        let (user_id, created, role_restored) = match existing {
            None => {
                let id = Uuid::new_v4();
                sqlx::query("INSERT INTO users (id, name, password_hash, roles, create_time, update_time) VALUES ($1, $2, NULL, $3, $4, $4)")
                    .bind(id.to_string())
                    .bind(name.to_string())
                    .bind(roles_json(&[admin_role.to_string()])?)
                    .bind(t.clone())
                    .execute(&mut *tx)
                    .await?;
                (id, true, false)
            }
            Some(u) if !u.roles.iter().any(|r| r == admin_role) => {
                let mut roles = u.roles.clone();
                roles.push(admin_role.to_string());
                roles.sort();
                sqlx::query("UPDATE users SET roles = $2, update_time = $3 WHERE id = $1")
                    .bind(u.id.to_string())
                    .bind(roles_json(&roles)?)
                    .bind(t.clone())
                    .execute(&mut *tx)
                    .await?;
                (u.id, false, true)
            }
            Some(u) => (u.id, false, false),
        };
        let revoked =
            sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND kind = 'bootstrap'")
                .bind(user_id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        token.user_id = user_id;
        sqlx::query("INSERT INTO api_tokens (id, token_hash, user_id, name, kind, create_time, expire_time) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(token.id.to_string())
            .bind(token.token_hash.clone())
            .bind(token.user_id.to_string())
            .bind(token.name.clone())
            .bind(token.kind.clone())
            .bind(format_time(token.create_time))
            .bind(token.expire_time.map(format_time))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AdminReset {
            user_id,
            created,
            role_restored,
            revoked,
        })
    }

    /// Deletes tokens that expired before `cutoff`; returns how many.
    pub async fn delete_expired_tokens(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        let _guard = self.admin_lock().await;
        let done = sqlx::query(
            "DELETE FROM api_tokens WHERE expire_time IS NOT NULL AND expire_time < $1",
        )
        .bind(format_time(cutoff))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// The outcome of [`Store::delete_org`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgDelete {
    Deleted,
    NotFound,
    /// The organization still owns these projects.
    HasProjects(Vec<String>),
}

/// The outcome of [`Store::put_project`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectPut {
    Done(ProjectRecord, Put),
    NoSuchOrg,
    /// The project exists in this other organization.
    OtherOrg(String),
}

fn roles_json(roles: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(roles).map_err(|e| StoreError::Corrupt(e.to_string()))
}
