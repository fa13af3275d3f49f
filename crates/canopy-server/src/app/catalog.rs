//! Catalog operations and the reference's business rules (real-system.md section 3):
//! uniqueness of keys and display names, references that must exist, registries and applications
//! that cannot be deleted while used, deployed packages that are immutable, and so on.
//!
//! The rule functions (`put_*`) work on an open [`CatalogTx`] so the REST create/update calls and
//! the bulk upload share them: an upload is just many puts in one transaction.

use canopy_core::catalog::{Application, Artifact, DeploymentPackage, ParameterTemplate, Registry};
use canopy_core::list::{self, Entity, ListQuery};
use canopy_core::validate;
use canopy_store::{CatalogTx, DisplayNameScope};

use super::{Access, App, AppError, Ctx};
use crate::events::{CatalogEvent, EventKind, EventOp};

/// How a put treats an existing entity with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutMode {
    /// Must not exist (REST create).
    Create,
    /// Must exist (REST update).
    Update,
    /// Create or update (upload).
    Upsert,
}

/// What a write did, for events and for upload summaries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSummary {
    /// `created`, `updated` or `unchanged`.
    pub action: String,
    /// `registry`, `application`, `deployment-package` or `artifact`.
    pub kind: String,
    /// `name` or `name:version`.
    pub key: String,
}

/// What a deployment of a package version with one deployment profile may set: for each of
/// the package's applications, the profile the deployment profile selects and its parameter
/// templates (the console's deploy form is made from this).
#[derive(Debug, Clone)]
pub struct DeployParameters {
    pub package: DeploymentPackage,
    /// The deployment profile (the package's default when none was asked for).
    pub profile: String,
    pub apps: Vec<AppParameters>,
}

/// One application of a [`DeployParameters`].
#[derive(Debug, Clone)]
pub struct AppParameters {
    pub name: String,
    pub version: String,
    /// The application profile the deployment profile selects.
    pub profile: String,
    pub templates: Vec<ParameterTemplate>,
}

/// A package's export archive.
pub struct PackageExport {
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// Collects events during a transaction, to publish after commit.
#[derive(Default)]
pub(crate) struct Changes {
    pub events: Vec<CatalogEvent>,
    pub summary: Vec<ChangeSummary>,
}

impl Changes {
    fn record(
        &mut self,
        ctx: &Ctx,
        op: EventOp,
        kind: EventKind,
        key: String,
        payload: serde_json::Value,
    ) {
        let (kind_name, action) = (
            match kind {
                EventKind::Registry => "registry",
                EventKind::Application => "application",
                EventKind::DeploymentPackage => "deployment-package",
                EventKind::Artifact => "artifact",
            },
            match op {
                EventOp::Created => "created",
                EventOp::Updated => "updated",
                EventOp::Deleted => "deleted",
                EventOp::Replayed => "replayed",
            },
        );
        self.summary.push(ChangeSummary {
            action: action.into(),
            kind: kind_name.into(),
            key,
        });
        self.events.push(CatalogEvent {
            op,
            kind,
            project: ctx.project.name.to_string(),
            payload,
        });
    }

    fn unchanged(&mut self, kind: &str, key: String) {
        self.summary.push(ChangeSummary {
            action: "unchanged".into(),
            kind: kind.into(),
            key,
        });
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn key(name: &str, version: &str) -> String {
    format!("{name}:{version}")
}

fn fill_display_name(display: &mut String, name: &str) {
    if display.is_empty() {
        *display = name.to_string();
    }
}

async fn check_display_name(
    tx: &mut CatalogTx,
    scope: DisplayNameScope,
    what: &str,
    key: &str,
    display: &str,
    name: &str,
) -> Result<(), AppError> {
    if let Some(owner) = tx.display_name_owner(scope, display, name).await? {
        return Err(AppError::AlreadyExists(format!(
            "{what} {key} display name {display:?} is not unique: it is used by {what} {owner}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- registries

pub(crate) async fn put_registry(
    tx: &mut CatalogTx,
    ctx: &Ctx,
    changes: &mut Changes,
    mut r: Registry,
    mode: PutMode,
) -> Result<Registry, AppError> {
    r.create_time = None;
    r.update_time = None;
    fill_display_name(&mut r.display_name, &r.name);
    validate::registry(&r)?;
    let existing = tx.get_registry(&r.name).await?;
    match (&existing, mode) {
        (Some(_), PutMode::Create) => {
            return Err(AppError::AlreadyExists(format!(
                "registry {} already exists",
                r.name
            )));
        }
        (None, PutMode::Update) => {
            return Err(AppError::NotFound(format!("registry {} not found", r.name)));
        }
        _ => {}
    }
    if let Some(old) = &existing {
        // Secrets omitted from the request are kept: a client that GETs (secrets redacted) and
        // PUTs back must not wipe credentials. An explicit empty string clears a secret.
        if r.username.is_none() {
            r.username = old.username.clone();
        }
        if r.auth_token.is_none() {
            r.auth_token = old.auth_token.clone();
        }
        if r.cacerts.is_none() {
            r.cacerts = old.cacerts.clone();
        }
        if old.registry_type != r.registry_type {
            let users = tx.registry_users(&r.name).await?;
            if let Some((app, ver, role)) = users.first() {
                return Err(AppError::FailedPrecondition(format!(
                    "registry {} type cannot change from {} to {}: it is the {role} registry of application {app}:{ver}",
                    r.name, old.registry_type, r.registry_type
                )));
            }
        }
        let unchanged = Registry {
            create_time: None,
            update_time: None,
            ..old.clone()
        } == r;
        if unchanged {
            changes.unchanged("registry", r.name.clone());
            return Ok(old.clone());
        }
    }
    check_display_name(
        tx,
        DisplayNameScope::Registry,
        "registry",
        &r.name,
        &r.display_name,
        &r.name,
    )
    .await?;
    let stored = tx.put_registry(&r).await?;
    let op = if existing.is_some() {
        EventOp::Updated
    } else {
        EventOp::Created
    };
    changes.record(
        ctx,
        op,
        EventKind::Registry,
        r.name.clone(),
        json(&stored.redacted()),
    );
    Ok(stored)
}

// ---------------------------------------------------------------- applications

async fn check_app_references(tx: &mut CatalogTx, a: &Application) -> Result<(), AppError> {
    let k = key(&a.name, &a.version);
    for (field, reg, want) in [
        ("helmRegistryName", &a.helm_registry_name, "HELM"),
        ("imageRegistryName", &a.image_registry_name, "IMAGE"),
    ] {
        if reg.is_empty() {
            continue;
        }
        match tx.get_registry(reg).await? {
            None => {
                return Err(AppError::Invalid(format!(
                    "application {k} {field}: registry {reg} not found; create it first"
                )));
            }
            Some(r) if r.registry_type != want => {
                return Err(AppError::Invalid(format!(
                    "application {k} {field}: registry {reg} is of type {}, expected {want}",
                    r.registry_type
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Deployment requirements must name existing packages (and deployment profiles). Uploads check
/// this after all their packages are applied, so a package and what requires it can travel in
/// one upload (as exports do).
pub(crate) async fn check_requirements(
    tx: &mut CatalogTx,
    a: &Application,
) -> Result<(), AppError> {
    let k = key(&a.name, &a.version);
    for p in &a.profiles {
        for req in &p.deployment_requirement {
            let Some(pkg) = tx.get_package(&req.name, &req.version).await? else {
                return Err(AppError::Invalid(format!(
                    "application {k} profile {}: deployment requirement deployment-package {}:{} not found",
                    p.name, req.name, req.version
                )));
            };
            if !req.deployment_profile_name.is_empty()
                && pkg.profile(&req.deployment_profile_name).is_none()
            {
                return Err(AppError::Invalid(format!(
                    "application {k} profile {}: deployment requirement deployment-package {}:{} has no deployment profile {}",
                    p.name, req.name, req.version, req.deployment_profile_name
                )));
            }
        }
    }
    Ok(())
}

pub(crate) async fn put_application(
    tx: &mut CatalogTx,
    ctx: &Ctx,
    changes: &mut Changes,
    mut a: Application,
    mode: PutMode,
) -> Result<Application, AppError> {
    a.create_time = None;
    a.update_time = None;
    for p in &mut a.profiles {
        p.create_time = None;
        p.update_time = None;
    }
    fill_display_name(&mut a.display_name, &a.name);
    validate::application(&a)?;
    let k = key(&a.name, &a.version);
    let existing = tx.get_application(&a.name, &a.version).await?;
    match (&existing, mode) {
        (Some(_), PutMode::Create) => {
            return Err(AppError::AlreadyExists(format!(
                "application {k} already exists"
            )));
        }
        (None, PutMode::Update) => {
            return Err(AppError::NotFound(format!("application {k} not found")));
        }
        _ => {}
    }
    if let Some(old) = &existing {
        if old.same_content_as(&a) && old.kind == a.kind {
            changes.unchanged("application", k);
            return Ok(old.clone());
        }
        let packages = tx.packages_using_application(&a.name, &a.version).await?;
        let deployed = packages.iter().filter(|p| p.is_deployed).count();
        if deployed > 0 && !old.same_content_as(&a) {
            return Err(AppError::FailedPrecondition(format!(
                "application {k} cannot update application that is part of {deployed} deployed package(s); please create a new version instead"
            )));
        }
        for pkg in &packages {
            for dp in &pkg.profiles {
                for (app_key, profile) in &dp.application_profiles {
                    let refers = app_key == &a.name || app_key == &k;
                    if refers && a.profile(profile).is_none() {
                        return Err(AppError::FailedPrecondition(format!(
                            "application {k} profile {profile} cannot be removed: it is used by deployment profile {} of deployment-package {}:{}",
                            dp.name, pkg.name, pkg.version
                        )));
                    }
                }
            }
        }
    }
    check_app_references(tx, &a).await?;
    if mode != PutMode::Upsert {
        check_requirements(tx, &a).await?;
    }
    check_display_name(
        tx,
        DisplayNameScope::Application,
        "application",
        &k,
        &a.display_name,
        &a.name,
    )
    .await?;
    let stored = tx.put_application(&a).await?;
    let op = if existing.is_some() {
        EventOp::Updated
    } else {
        EventOp::Created
    };
    changes.record(ctx, op, EventKind::Application, k, json(&stored));
    Ok(stored)
}

// ---------------------------------------------------------------- packages

async fn check_package_references(
    tx: &mut CatalogTx,
    p: &DeploymentPackage,
) -> Result<(), AppError> {
    let k = key(&p.name, &p.version);
    let mut apps = Vec::with_capacity(p.application_references.len());
    for r in &p.application_references {
        match tx.get_application(&r.name, &r.version).await? {
            Some(a) => apps.push(a),
            None => {
                return Err(AppError::Invalid(format!(
                    "deployment-package {k} applicationReferences: application {}:{} not found",
                    r.name, r.version
                )));
            }
        }
    }
    validate::check_package_profiles(p, &apps)?;
    for a in &p.artifacts {
        if tx.get_artifact(&a.name).await?.is_none() {
            return Err(AppError::Invalid(format!(
                "deployment-package {k} artifacts: artifact {} not found",
                a.name
            )));
        }
    }
    Ok(())
}

pub(crate) async fn put_package(
    tx: &mut CatalogTx,
    ctx: &Ctx,
    changes: &mut Changes,
    mut p: DeploymentPackage,
    mode: PutMode,
) -> Result<DeploymentPackage, AppError> {
    p.create_time = None;
    p.update_time = None;
    for dp in &mut p.profiles {
        dp.create_time = None;
        dp.update_time = None;
    }
    fill_display_name(&mut p.display_name, &p.name);
    validate::deployment_package(&p)?;
    let k = key(&p.name, &p.version);
    let existing = tx.get_package(&p.name, &p.version).await?;
    match (&existing, mode) {
        (Some(_), PutMode::Create) => {
            return Err(AppError::AlreadyExists(format!(
                "deployment-package {k} already exists"
            )));
        }
        (None, PutMode::Update) => {
            return Err(AppError::NotFound(format!(
                "deployment-package {k} not found"
            )));
        }
        _ => {}
    }
    if let Some(old) = &existing {
        let same = old.same_content_as(&p);
        if same && old.is_deployed == p.is_deployed && old.kind == p.kind {
            changes.unchanged("deployment-package", k);
            return Ok(old.clone());
        }
        if old.is_deployed && !same {
            return Err(AppError::FailedPrecondition(format!(
                "deployment-package {k} cannot modify deployed package (only isDeployed and kind may change while it is deployed)"
            )));
        }
    }
    check_package_references(tx, &p).await?;
    check_display_name(
        tx,
        DisplayNameScope::DeploymentPackage,
        "deployment-package",
        &k,
        &p.display_name,
        &p.name,
    )
    .await?;
    let stored = tx.put_package(&p).await?;
    let op = if existing.is_some() {
        EventOp::Updated
    } else {
        EventOp::Created
    };
    changes.record(ctx, op, EventKind::DeploymentPackage, k, json(&stored));
    Ok(stored)
}

// ---------------------------------------------------------------- artifacts

pub(crate) async fn put_artifact(
    tx: &mut CatalogTx,
    ctx: &Ctx,
    changes: &mut Changes,
    mut a: Artifact,
    mode: PutMode,
) -> Result<Artifact, AppError> {
    a.create_time = None;
    a.update_time = None;
    fill_display_name(&mut a.display_name, &a.name);
    validate::artifact(&a)?;
    let existing = tx.get_artifact(&a.name).await?;
    match (&existing, mode) {
        (Some(_), PutMode::Create) => {
            return Err(AppError::AlreadyExists(format!(
                "artifact {} already exists",
                a.name
            )));
        }
        (None, PutMode::Update) => {
            return Err(AppError::NotFound(format!("artifact {} not found", a.name)));
        }
        _ => {}
    }
    if let Some(old) = &existing {
        let unchanged = Artifact {
            create_time: None,
            update_time: None,
            ..old.clone()
        } == a;
        if unchanged {
            changes.unchanged("artifact", a.name.clone());
            return Ok(old.clone());
        }
    }
    check_display_name(
        tx,
        DisplayNameScope::Artifact,
        "artifact",
        &a.name,
        &a.display_name,
        &a.name,
    )
    .await?;
    let stored = tx.put_artifact(&a).await?;
    let op = if existing.is_some() {
        EventOp::Updated
    } else {
        EventOp::Created
    };
    let mut payload = json(&stored);
    if let Some(obj) = payload.as_object_mut() {
        // Events carry metadata; the content can be fetched by name.
        obj.remove("artifact");
    }
    changes.record(ctx, op, EventKind::Artifact, a.name.clone(), payload);
    Ok(stored)
}

// ---------------------------------------------------------------- the App API

/// `key` is the resource as the path names it (`name` or `name:version`).
fn path_must_match(
    what: &str,
    key: &str,
    field: &str,
    path: &str,
    body: &str,
) -> Result<(), AppError> {
    if path != body {
        return Err(AppError::Invalid(format!(
            "{what} {key} {field} cannot be changed (the request body says {body:?})"
        )));
    }
    Ok(())
}

fn parse_list(entity: Entity, raw: Option<&str>) -> Result<ListQuery, AppError> {
    Ok(list::parse_query(entity, raw.unwrap_or(""))?)
}

/// Parses `showSensitiveInfo` from a get request's query string (the only parameter allowed).
fn parse_show_sensitive(raw: Option<&str>) -> Result<bool, AppError> {
    let mut show = false;
    for (k, v) in list::form_pairs(raw.unwrap_or(""))? {
        match k.as_str() {
            "showSensitiveInfo" => show = list::parse_bool("showSensitiveInfo", &v)?,
            other => {
                return Err(AppError::Invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(show)
}

impl App {
    pub(crate) async fn commit(
        &self,
        ctx: &Ctx,
        tx: CatalogTx,
        changes: Changes,
    ) -> Result<Vec<ChangeSummary>, AppError> {
        tx.commit().await?;
        self.events().publish(ctx.project.id, changes.events);
        Ok(changes.summary)
    }

    async fn write_one<T, F>(&self, ctx: &Ctx, f: F) -> Result<T, AppError>
    where
        F: AsyncFnOnce(&mut CatalogTx, &mut Changes) -> Result<T, AppError>,
    {
        let mut tx = self.store().write(ctx.project.id).await?;
        let mut changes = Changes::default();
        let out = f(&mut tx, &mut changes).await?;
        self.commit(ctx, tx, changes).await?;
        Ok(out)
    }

    // ---- registries

    pub async fn create_registry(&self, ctx: &Ctx, r: Registry) -> Result<Registry, AppError> {
        ctx.require(Access::CatalogWrite)?;
        let stored = self
            .write_one(ctx, async |tx, ch| {
                put_registry(tx, ctx, ch, r, PutMode::Create).await
            })
            .await?;
        Ok(stored.redacted())
    }

    pub async fn update_registry(
        &self,
        ctx: &Ctx,
        name: &str,
        r: Registry,
    ) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        path_must_match("registry", name, "name", name, &r.name)?;
        self.write_one(ctx, async |tx, ch| {
            put_registry(tx, ctx, ch, r, PutMode::Update).await
        })
        .await?;
        Ok(())
    }

    pub async fn get_registry(
        &self,
        ctx: &Ctx,
        name: &str,
        query: Option<&str>,
    ) -> Result<Registry, AppError> {
        ctx.require(Access::CatalogRead)?;
        let show = parse_show_sensitive(query)?;
        if show {
            // Credentials go only to callers who could also change them.
            ctx.require(Access::CatalogWrite)?;
        }
        let mut tx = self.store().read(ctx.project.id).await?;
        let r = tx
            .get_registry(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("registry {name} not found")))?;
        Ok(if show { r } else { r.redacted() })
    }

    pub async fn list_registries(
        &self,
        ctx: &Ctx,
        query: Option<&str>,
    ) -> Result<(Vec<Registry>, u64), AppError> {
        ctx.require(Access::CatalogRead)?;
        let q = parse_list(Entity::Registry, query)?;
        if q.show_sensitive_info {
            ctx.require(Access::CatalogWrite)?;
        }
        let mut tx = self.store().read(ctx.project.id).await?;
        let (items, total) = tx.list_registries(&q).await?;
        let items = if q.show_sensitive_info {
            items
        } else {
            items.iter().map(Registry::redacted).collect()
        };
        Ok((items, total))
    }

    pub async fn delete_registry(&self, ctx: &Ctx, name: &str) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        self.write_one(ctx, async |tx, ch| {
            if tx.get_registry(name).await?.is_none() {
                return Err(AppError::NotFound(format!("registry {name} not found")));
            }
            let users = tx.registry_users(name).await?;
            if !users.is_empty() {
                let list: Vec<String> = users
                    .iter()
                    .take(5)
                    .map(|(a, v, _)| format!("{a}:{v}"))
                    .collect();
                return Err(AppError::FailedPrecondition(format!(
                    "registry {name} cannot delete registry while in use by {} application(s): {}",
                    users.len(),
                    list.join(", ")
                )));
            }
            tx.delete_registry(name).await?;
            ch.record(
                ctx,
                EventOp::Deleted,
                EventKind::Registry,
                name.to_string(),
                serde_json::json!({"name": name}),
            );
            Ok(())
        })
        .await
    }

    // ---- applications

    pub async fn create_application(
        &self,
        ctx: &Ctx,
        a: Application,
    ) -> Result<Application, AppError> {
        ctx.require(Access::CatalogWrite)?;
        self.write_one(ctx, async |tx, ch| {
            put_application(tx, ctx, ch, a, PutMode::Create).await
        })
        .await
    }

    pub async fn update_application(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
        a: Application,
    ) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        let k = key(name, version);
        path_must_match("application", &k, "name", name, &a.name)?;
        path_must_match("application", &k, "version", version, &a.version)?;
        self.write_one(ctx, async |tx, ch| {
            put_application(tx, ctx, ch, a, PutMode::Update).await
        })
        .await?;
        Ok(())
    }

    pub async fn get_application(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
    ) -> Result<Application, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        tx.get_application(name, version)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("application {name}:{version} not found")))
    }

    pub async fn application_versions(
        &self,
        ctx: &Ctx,
        name: &str,
    ) -> Result<Vec<Application>, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        let v = tx.application_versions(name).await?;
        if v.is_empty() {
            return Err(AppError::NotFound(format!("application {name} not found")));
        }
        Ok(v)
    }

    pub async fn list_applications(
        &self,
        ctx: &Ctx,
        query: Option<&str>,
    ) -> Result<(Vec<Application>, u64), AppError> {
        ctx.require(Access::CatalogRead)?;
        let q = parse_list(Entity::Application, query)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        Ok(tx.list_applications(&q).await?)
    }

    pub async fn application_reference_count(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
    ) -> Result<u32, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        if tx.get_application(name, version).await?.is_none() {
            return Err(AppError::NotFound(format!(
                "application {name}:{version} not found"
            )));
        }
        Ok(tx.packages_using_application(name, version).await?.len() as u32)
    }

    pub async fn delete_application(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
    ) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        let k = key(name, version);
        self.write_one(ctx, async |tx, ch| {
            if tx.get_application(name, version).await?.is_none() {
                return Err(AppError::NotFound(format!("application {k} not found")));
            }
            let users = tx.packages_using_application(name, version).await?;
            if !users.is_empty() {
                let list: Vec<String> = users
                    .iter()
                    .take(5)
                    .map(|p| key(&p.name, &p.version))
                    .collect();
                return Err(AppError::FailedPrecondition(format!(
                    "application {k} cannot be deleted: it is used by {} deployment package(s): {}",
                    users.len(),
                    list.join(", ")
                )));
            }
            tx.delete_application(name, version).await?;
            ch.record(
                ctx,
                EventOp::Deleted,
                EventKind::Application,
                k.clone(),
                serde_json::json!({"name": name, "version": version}),
            );
            Ok(())
        })
        .await
    }

    // ---- deployment packages

    pub async fn create_package(
        &self,
        ctx: &Ctx,
        p: DeploymentPackage,
    ) -> Result<DeploymentPackage, AppError> {
        ctx.require(Access::CatalogWrite)?;
        self.write_one(ctx, async |tx, ch| {
            put_package(tx, ctx, ch, p, PutMode::Create).await
        })
        .await
    }

    pub async fn update_package(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
        p: DeploymentPackage,
    ) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        let k = key(name, version);
        path_must_match("deployment-package", &k, "name", name, &p.name)?;
        path_must_match("deployment-package", &k, "version", version, &p.version)?;
        self.write_one(ctx, async |tx, ch| {
            put_package(tx, ctx, ch, p, PutMode::Update).await
        })
        .await?;
        Ok(())
    }

    pub async fn get_package(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
    ) -> Result<DeploymentPackage, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        tx.get_package(name, version).await?.ok_or_else(|| {
            AppError::NotFound(format!("deployment-package {name}:{version} not found"))
        })
    }

    pub async fn package_versions(
        &self,
        ctx: &Ctx,
        name: &str,
    ) -> Result<Vec<DeploymentPackage>, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        let v = tx.package_versions(name).await?;
        if v.is_empty() {
            return Err(AppError::NotFound(format!(
                "deployment-package {name} not found"
            )));
        }
        Ok(v)
    }

    pub async fn list_packages(
        &self,
        ctx: &Ctx,
        query: Option<&str>,
    ) -> Result<(Vec<DeploymentPackage>, u64), AppError> {
        ctx.require(Access::CatalogRead)?;
        let q = parse_list(Entity::DeploymentPackage, query)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        Ok(tx.list_packages(&q).await?)
    }

    pub async fn delete_package(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
    ) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        let k = key(name, version);
        self.write_one(ctx, async |tx, ch| {
            let Some(p) = tx.get_package(name, version).await? else {
                return Err(AppError::NotFound(format!("deployment-package {k} not found")));
            };
            if p.is_deployed {
                return Err(AppError::FailedPrecondition(format!(
                    "deployment-package {k} cannot modify deployed package: delete its deployments first"
                )));
            }
            tx.delete_package(name, version).await?;
            ch.record(ctx, EventOp::Deleted, EventKind::DeploymentPackage, k.clone(), serde_json::json!({"name": name, "version": version}));
            Ok(())
        })
        .await
    }

    /// Builds the export archive of a package: the package, its applications (with values
    /// files), the registries they use (without secrets) and its artifacts.
    pub async fn export_package(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
    ) -> Result<PackageExport, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        let k = key(name, version);
        let p = tx
            .get_package(name, version)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("deployment-package {k} not found")))?;
        // The packages required through deployment requirements travel along, transitively,
        // with their applications.
        let mut required: Vec<DeploymentPackage> = Vec::new();
        let mut apps: Vec<Application> = Vec::new();
        let mut seen_pkgs = std::collections::BTreeSet::from([(p.name.clone(), p.version.clone())]);
        let mut registry_names = std::collections::BTreeSet::new();
        let mut to_walk: Vec<DeploymentPackage> = vec![p.clone()];
        while let Some(pkg) = to_walk.pop() {
            for r in &pkg.application_references {
                if apps
                    .iter()
                    .any(|a| a.name == r.name && a.version == r.version)
                {
                    continue;
                }
                let a = tx
                    .get_application(&r.name, &r.version)
                    .await?
                    .ok_or_else(|| {
                        AppError::Internal(format!(
                            "deployment-package {}:{} references missing application {}:{}",
                            pkg.name, pkg.version, r.name, r.version
                        ))
                    })?;
                for req in a
                    .profiles
                    .iter()
                    .flat_map(|prof| &prof.deployment_requirement)
                {
                    if seen_pkgs.insert((req.name.clone(), req.version.clone()))
                        && let Some(found) = tx.get_package(&req.name, &req.version).await?
                    {
                        required.push(found.clone());
                        to_walk.push(found);
                    }
                }
                registry_names.insert(a.helm_registry_name.clone());
                if !a.image_registry_name.is_empty() {
                    registry_names.insert(a.image_registry_name.clone());
                }
                apps.push(a);
            }
        }
        let mut registries = Vec::new();
        for n in registry_names.iter().filter(|n| !n.is_empty()) {
            if let Some(r) = tx.get_registry(n).await? {
                registries.push(r.redacted());
            }
        }
        let mut artifacts = Vec::new();
        for a in std::iter::once(&p)
            .chain(&required)
            .flat_map(|pkg| &pkg.artifacts)
        {
            if let Some(art) = tx.get_artifact(&a.name).await?
                && !artifacts.iter().any(|x: &Artifact| x.name == art.name)
            {
                artifacts.push(art);
            }
        }
        drop(tx);
        let bytes = tokio::task::spawn_blocking(move || {
            canopy_core::upload::export_packages(&p, &required, &apps, &registries, &artifacts)
        })
        .await
        .map_err(|e| AppError::Internal(format!("export task failed: {e}")))?
        .map_err(|e| AppError::Internal(format!("export of deployment-package {k} failed: {e}")))?;
        Ok(PackageExport {
            file_name: format!("{name}-{version}.tar.gz"),
            bytes,
        })
    }

    // ---- artifacts

    pub async fn create_artifact(&self, ctx: &Ctx, a: Artifact) -> Result<Artifact, AppError> {
        ctx.require(Access::CatalogWrite)?;
        self.write_one(ctx, async |tx, ch| {
            put_artifact(tx, ctx, ch, a, PutMode::Create).await
        })
        .await
    }

    pub async fn update_artifact(
        &self,
        ctx: &Ctx,
        name: &str,
        a: Artifact,
    ) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        path_must_match("artifact", name, "name", name, &a.name)?;
        self.write_one(ctx, async |tx, ch| {
            put_artifact(tx, ctx, ch, a, PutMode::Update).await
        })
        .await?;
        Ok(())
    }

    pub async fn get_artifact(&self, ctx: &Ctx, name: &str) -> Result<Artifact, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        tx.get_artifact(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("artifact {name} not found")))
    }

    pub async fn list_artifacts(
        &self,
        ctx: &Ctx,
        query: Option<&str>,
    ) -> Result<(Vec<Artifact>, u64), AppError> {
        ctx.require(Access::CatalogRead)?;
        let q = parse_list(Entity::Artifact, query)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        Ok(tx.list_artifacts(&q).await?)
    }

    pub async fn delete_artifact(&self, ctx: &Ctx, name: &str) -> Result<(), AppError> {
        ctx.require(Access::CatalogWrite)?;
        self.write_one(ctx, async |tx, ch| {
            if tx.get_artifact(name).await?.is_none() {
                return Err(AppError::NotFound(format!("artifact {name} not found")));
            }
            let users = tx.packages_using_artifact(name).await?;
            if !users.is_empty() {
                let list: Vec<String> = users.iter().take(5).map(|(n, v)| key(n, v)).collect();
                return Err(AppError::FailedPrecondition(format!(
                    "artifact {name} is in use by {} deployment package(s): {}",
                    users.len(),
                    list.join(", ")
                )));
            }
            tx.delete_artifact(name).await?;
            ch.record(
                ctx,
                EventOp::Deleted,
                EventKind::Artifact,
                name.to_string(),
                serde_json::json!({"name": name}),
            );
            Ok(())
        })
        .await
    }
}

impl App {
    /// The current state of the project's catalog as `replayed` events (registries without
    /// secrets, artifacts without content), read in bounded pages from one snapshot.
    pub async fn replay(
        &self,
        ctx: &Ctx,
        kinds: &[EventKind],
    ) -> Result<Vec<CatalogEvent>, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        let mut out = Vec::new();
        let mut q = ListQuery {
            page_size: list::MAX_PAGE_SIZE,
            ..ListQuery::default()
        };
        let event = |kind, payload| CatalogEvent {
            op: EventOp::Replayed,
            kind,
            project: ctx.project.name.to_string(),
            payload,
        };
        for kind in kinds {
            q.offset = 0;
            loop {
                let n = match kind {
                    EventKind::Registry => {
                        let (page, _) = tx.list_registries(&q).await?;
                        out.extend(page.iter().map(|r| event(*kind, json(&r.redacted()))));
                        page.len()
                    }
                    EventKind::Application => {
                        let (page, _) = tx.list_applications(&q).await?;
                        out.extend(page.iter().map(|a| event(*kind, json(a))));
                        page.len()
                    }
                    EventKind::DeploymentPackage => {
                        let (page, _) = tx.list_packages(&q).await?;
                        out.extend(page.iter().map(|p| event(*kind, json(p))));
                        page.len()
                    }
                    EventKind::Artifact => {
                        let (page, _) = tx.list_artifacts(&q).await?;
                        out.extend(page.iter().map(|a| {
                            let mut v = json(a);
                            if let Some(o) = v.as_object_mut() {
                                o.remove("artifact");
                            }
                            event(*kind, v)
                        }));
                        page.len()
                    }
                };
                if n < q.page_size as usize {
                    break;
                }
                q.offset += n as u64;
            }
        }
        Ok(out)
    }
}
