//! Project policies ([`ProjectPolicy`]): one row per project whose policy was ever set.
//!
//! Read and written inside the project's [`CatalogTx`], so a deployment rendered in a write
//! transaction sees the policy as it is when it commits: setting a policy waits for the
//! project's writers (deployments being created or updated) and they wait for it.

use canopy_core::policy::ProjectPolicy;
use sqlx::Row;
use time::OffsetDateTime;

use crate::sql::{format_time, parse_time};
use crate::{CatalogTx, StoreError};

impl CatalogTx {
    /// The project's policy and when it was set; `None` when it never was (the default
    /// applies).
    pub async fn get_project_policy(
        &mut self,
    ) -> Result<Option<(ProjectPolicy, OffsetDateTime)>, StoreError> {
        let row =
            sqlx::query("SELECT body, update_time FROM project_policies WHERE project_id = $1")
                .bind(self.pid())
                .fetch_optional(&mut *self.tx)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: String = row.try_get(0)?;
        let policy = serde_json::from_str(&body).map_err(|e| {
            StoreError::Corrupt(format!("project policy of project {}: {e}", self.pid()))
        })?;
        Ok(Some((policy, parse_time(&row.try_get::<String, _>(1)?)?)))
    }

    /// Sets the project's policy (replacing the one it has).
    pub async fn put_project_policy(
        &mut self,
        policy: &ProjectPolicy,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        let body = serde_json::to_string(policy)
            .map_err(|e| StoreError::Corrupt(format!("project policy does not serialize: {e}")))?;
        sqlx::query(
            "INSERT INTO project_policies (project_id, body, update_time) VALUES ($1, $2, $3) \
             ON CONFLICT (project_id) DO UPDATE SET body = excluded.body, update_time = excluded.update_time",
        )
        .bind(self.pid())
        .bind(body)
        .bind(format_time(at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
