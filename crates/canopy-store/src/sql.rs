//! The `sqlx::Any` implementation shared by SQLite and PostgreSQL.
//! (API contract: see the method docs; bodies to be filled in.)

use std::path::Path;

use canopy_core::catalog::{Application, Artifact, DeploymentPackage, Registry};
use canopy_core::list::ListQuery;
use canopy_core::names::ProjectName;
use uuid::Uuid;

use crate::{Backend, DisplayNameScope, Project, ProjectId, StoreError, StoredUploadFile};

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    _private: (),
}

/// A catalog transaction of one project. Dropped without [`CatalogTx::commit`] = rolled back.
pub struct CatalogTx {
    _private: (),
}

#[allow(unused_variables, clippy::unused_async)]
impl Store {
    /// Connects to `sqlite://PATH` (file created if missing; WAL, foreign keys, busy timeout) or
    /// `postgres://...`, and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        todo!()
    }

    /// Opens (creating if needed) the embedded database file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        todo!()
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        todo!()
    }

    /// Returns the project of that name, creating it if it does not exist.
    pub async fn ensure_project(&self, name: &ProjectName) -> Result<Project, StoreError> {
        todo!()
    }

    /// The project of that name, if any.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError> {
        todo!()
    }

    /// All projects, by name.
    pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        todo!()
    }

    /// Starts a write transaction on `project`'s catalog; waits for other writers of the project.
    pub async fn write(&self, project: ProjectId) -> Result<CatalogTx, StoreError> {
        todo!()
    }

    /// Starts a read-only transaction (a consistent snapshot) on `project`'s catalog.
    pub async fn read(&self, project: ProjectId) -> Result<CatalogTx, StoreError> {
        todo!()
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        todo!()
    }
}

#[allow(unused_variables, clippy::unused_async)]
impl CatalogTx {
    pub fn project(&self) -> ProjectId {
        todo!()
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        todo!()
    }

    // ---- registries
    pub async fn get_registry(&mut self, name: &str) -> Result<Option<Registry>, StoreError> {
        todo!()
    }
    /// Page of registries and `totalElements` (count before paging).
    pub async fn list_registries(&mut self, q: &ListQuery) -> Result<(Vec<Registry>, u64), StoreError> {
        todo!()
    }
    /// Inserts or replaces by name. `createTime` kept from the existing row (or now), `updateTime`
    /// now; returns the stored entity with both set.
    pub async fn put_registry(&mut self, r: &Registry) -> Result<Registry, StoreError> {
        todo!()
    }
    pub async fn delete_registry(&mut self, name: &str) -> Result<bool, StoreError> {
        todo!()
    }
    /// Applications using the registry: `(app name, version, "helm" | "image")`.
    pub async fn registry_users(&mut self, name: &str) -> Result<Vec<(String, String, &'static str)>, StoreError> {
        todo!()
    }

    // ---- applications
    pub async fn get_application(&mut self, name: &str, version: &str) -> Result<Option<Application>, StoreError> {
        todo!()
    }
    pub async fn application_versions(&mut self, name: &str) -> Result<Vec<Application>, StoreError> {
        todo!()
    }
    pub async fn list_applications(&mut self, q: &ListQuery) -> Result<(Vec<Application>, u64), StoreError> {
        todo!()
    }
    pub async fn put_application(&mut self, a: &Application) -> Result<Application, StoreError> {
        todo!()
    }
    pub async fn delete_application(&mut self, name: &str, version: &str) -> Result<bool, StoreError> {
        todo!()
    }
    /// Packages whose `applicationReferences` include `name:version`.
    pub async fn packages_using_application(&mut self, name: &str, version: &str) -> Result<Vec<DeploymentPackage>, StoreError> {
        todo!()
    }

    // ---- deployment packages
    pub async fn get_package(&mut self, name: &str, version: &str) -> Result<Option<DeploymentPackage>, StoreError> {
        todo!()
    }
    pub async fn package_versions(&mut self, name: &str) -> Result<Vec<DeploymentPackage>, StoreError> {
        todo!()
    }
    pub async fn list_packages(&mut self, q: &ListQuery) -> Result<(Vec<DeploymentPackage>, u64), StoreError> {
        todo!()
    }
    /// Inserts or replaces; also maintains the package -> application and package -> artifact
    /// reference rows used by the in-use checks.
    pub async fn put_package(&mut self, p: &DeploymentPackage) -> Result<DeploymentPackage, StoreError> {
        todo!()
    }
    pub async fn delete_package(&mut self, name: &str, version: &str) -> Result<bool, StoreError> {
        todo!()
    }

    // ---- artifacts
    pub async fn get_artifact(&mut self, name: &str) -> Result<Option<Artifact>, StoreError> {
        todo!()
    }
    pub async fn list_artifacts(&mut self, q: &ListQuery) -> Result<(Vec<Artifact>, u64), StoreError> {
        todo!()
    }
    pub async fn put_artifact(&mut self, a: &Artifact) -> Result<Artifact, StoreError> {
        todo!()
    }
    pub async fn delete_artifact(&mut self, name: &str) -> Result<bool, StoreError> {
        todo!()
    }
    /// Packages referencing the artifact: `(name, version)`.
    pub async fn packages_using_artifact(&mut self, name: &str) -> Result<Vec<(String, String)>, StoreError> {
        todo!()
    }

    // ---- rules support
    /// The name of another entity of `scope` in this project whose display name equals
    /// `display_name` case-insensitively, excluding entities named `exclude_name` (all versions
    /// of it). `None` when the display name is free.
    pub async fn display_name_owner(
        &mut self,
        scope: DisplayNameScope,
        display_name: &str,
        exclude_name: &str,
    ) -> Result<Option<String>, StoreError> {
        todo!()
    }

    // ---- upload sessions (files are held until the last upload, then applied in one tx)
    pub async fn create_upload_session(&mut self) -> Result<Uuid, StoreError> {
        todo!()
    }
    /// Whether the session exists in this project.
    pub async fn upload_session_exists(&mut self, session: Uuid) -> Result<bool, StoreError> {
        todo!()
    }
    /// Appends a file; returns the number of files now in the session.
    pub async fn add_upload_file(&mut self, session: Uuid, file: &StoredUploadFile) -> Result<u32, StoreError> {
        todo!()
    }
    /// The session's files in upload order, and deletes the session (within this transaction).
    pub async fn take_upload_files(&mut self, session: Uuid) -> Result<Vec<StoredUploadFile>, StoreError> {
        todo!()
    }
    /// Total bytes held by the session so far.
    pub async fn upload_session_bytes(&mut self, session: Uuid) -> Result<u64, StoreError> {
        todo!()
    }
}
