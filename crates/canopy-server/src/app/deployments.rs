//! The deployment manager (reference section 6): create, update (upgrade, downgrade, retarget),
//! delete, the cluster views and the status summary.
//!
//! Every mutation runs under the hub's write lock, in one store transaction of the project (the
//! deployment rows, the catalog packages' `isDeployed` flags and the fleet revision change
//! together), and reaches the hub only after commit. The rules themselves (request checks,
//! targeting, rendering, status folding) are in `canopy-deploy`; this module orchestrates them.
//! Apps are rendered under the project policy read in the same transaction (`app/policy.rs`):
//! a violation refuses the whole change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use canopy_core::catalog::{Application, DeploymentPackage, Registry};
use canopy_core::list::{Entity, Field};
use canopy_core::policy::ProjectPolicy;
use canopy_deploy::helm::{HelmRenders, HelmRequest};
use canopy_deploy::model::{
    App as ApiApp, Cluster, ClusterInfo, DeleteType, Deployment, DeploymentInstancesCluster,
    DeploymentStatus, DeploymentsStatus, State, TargetClusters,
};
use canopy_deploy::render::{
    PackageInput, Rendered, Requirement, application_profile_name, render_deployment,
};
use canopy_deploy::target::{labels_filter_matches, targeting, update_targets};
use canopy_deploy::validate::normalize_request;
use canopy_store::CatalogTx;
use time::OffsetDateTime;

use super::catalog::{AppParameters, DeployParameters};
use super::edges::{edge_not_found, labels_match, list_query, parse_label_filters};
use super::fleet_tx::{FleetTx, HubOp};
use super::{Access, App, AppError, Ctx};
use crate::hub::DeploymentRecord;

/// How deep deployment requirements may nest (a cycle is refused long before).
const MAX_REQUIREMENT_DEPTH: usize = 8;

/// `/deployments/{id}/clusters`: one page and the total.
pub struct DeploymentClusters {
    pub clusters: Vec<Cluster>,
    pub total: u64,
}

/// The deployments of a project as the web console's list shows them
/// ([`App::deployments_overview`]).
#[derive(Debug, Clone)]
pub struct DeploymentsOverview {
    /// Every deployment's edges counted by state (`deployments_status`).
    pub summary: DeploymentsStatus,
    /// The page asked for.
    pub page: Vec<Deployment>,
    /// Deployments after the `labels` filter, before `filter` and paging (`totalElements`).
    pub total: u64,
    /// Deployments that matched `filter` (for paging).
    pub matched: u64,
}

/// Which of a deployment's edges a page shows ([`App::deployment_edges`]).
#[derive(Debug, Clone, Default)]
pub struct DeploymentEdgeQuery {
    /// Case-insensitive substring of the edge name (empty: every edge).
    pub name: String,
    /// Only edges with a problem (see [`is_problem`]).
    pub problems_only: bool,
    /// Edges (in name order) before the page.
    pub offset: u64,
    /// Edges on the page.
    pub limit: u64,
}

/// How long a deployment may be DEPLOYING or UPDATING on an edge after its last change before
/// the edge counts as a problem (see [`is_problem`]).
pub const DEPLOYING_GRACE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Whether an edge's view of a deployment is a problem: any state but RUNNING (DOWN, ERROR,
/// INTERNAL_ERROR, UNKNOWN, TERMINATING, ...), except DEPLOYING or UPDATING within
/// [`DEPLOYING_GRACE`] of the deployment's last change (`since_change`): an edge still
/// deploying after that is a problem too.
pub fn is_problem(state: State, since_change: std::time::Duration) -> bool {
    match state {
        State::Running => false,
        State::Deploying | State::Updating => since_change >= DEPLOYING_GRACE,
        _ => true,
    }
}

/// One edge of a deployment as its page shows it: the per-app view and when the edge last
/// reported.
#[derive(Debug, Clone)]
pub struct DeploymentEdge {
    pub cluster: Cluster,
    pub last_seen: Option<OffsetDateTime>,
}

/// A page of a deployment's edges ([`App::deployment_edges`]).
#[derive(Debug, Clone)]
pub struct DeploymentEdges {
    /// The deployment (without `apps`: they are in the edges).
    pub deployment: Deployment,
    pub edges: Vec<DeploymentEdge>,
    /// Every edge of the deployment.
    pub total: u64,
    /// Edges that matched the query (for paging).
    pub matched: u64,
    /// Edges with a problem, whatever the query.
    pub problems: u64,
}

/// A package with its applications and the registries they name (with credentials).
struct PackageParts {
    package: DeploymentPackage,
    apps: Vec<Application>,
    registries: BTreeMap<String, Registry>,
}

async fn load_package(
    tx: &mut CatalogTx,
    name: &str,
    version: &str,
) -> Result<PackageParts, AppError> {
    let package = tx.get_package(name, version).await?.ok_or_else(|| {
        AppError::NotFound(format!("deployment package {name}:{version} not found"))
    })?;
    let mut apps = Vec::new();
    let mut registries = BTreeMap::new();
    for r in &package.application_references {
        let app = tx
            .get_application(&r.name, &r.version)
            .await?
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "application {}:{} of deployment package {name}:{version} not found",
                    r.name, r.version
                ))
            })?;
        for reg in [&app.image_registry_name, &app.helm_registry_name] {
            if !reg.is_empty() && !registries.contains_key(reg) {
                let found = tx.get_registry(reg).await?.ok_or_else(|| {
                    AppError::NotFound(format!(
                        "registry {reg} of application {}:{} not found",
                        app.name, app.version
                    ))
                })?;
                registries.insert(reg.clone(), found);
            }
        }
        apps.push(app);
    }
    Ok(PackageParts {
        package,
        apps,
        registries,
    })
}

/// The project's policy as it is in this transaction (the default when none was set): apps
/// are rendered for edges under it.
async fn project_policy(tx: &mut CatalogTx) -> Result<ProjectPolicy, AppError> {
    Ok(tx
        .get_project_policy()
        .await?
        .map(|(p, _)| p)
        .unwrap_or_default())
}

async fn set_deployed(
    tx: &mut CatalogTx,
    name: &str,
    version: &str,
    deployed: bool,
) -> Result<(), AppError> {
    if let Some(mut p) = tx.get_package(name, version).await?
        && p.is_deployed != deployed
    {
        p.is_deployed = deployed;
        tx.put_package(&p).await?;
    }
    Ok(())
}

/// A fresh `deployment-xxxxx` name not used in the project.
fn new_name(taken: &BTreeSet<String>) -> String {
    loop {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("deployment-{}", &hex[..5]);
        if !taken.contains(&name) {
            return name;
        }
    }
}

/// What one transaction of the deployment manager changes in the hub after commit.
#[derive(Default)]
struct Plan {
    put: Vec<DeploymentRecord>,
    /// Helm applications rendered so far (first pass: the results in memory).
    renders: HelmRenders,
    /// Helm applications without a result: the transaction must roll back, these be rendered
    /// and the transaction run again.
    pending: Vec<HelmRequest>,
    /// The project's organization (`%OrgName%`).
    org: String,
    /// Ids and names of the deployments created, in order of creation, kept across passes:
    /// a Helm application's release name and default namespace come from them, so a second
    /// pass must create the same deployments under the same ids to find its renders.
    ids: Vec<(String, String)>,
    /// How many of `ids` this pass has used.
    ids_used: usize,
}

impl Plan {
    /// The id and name of the next deployment created in this pass: the previous pass's, or
    /// new ones.
    fn next_id(&mut self, taken: &BTreeSet<String>) -> (String, String) {
        let i = self.ids_used;
        self.ids_used += 1;
        if let Some((id, name)) = self.ids.get_mut(i) {
            if taken.contains(name.as_str()) {
                *name = new_name(taken);
            }
            return (id.clone(), name.clone());
        }
        let fresh = (uuid::Uuid::new_v4().to_string(), new_name(taken));
        self.ids.push(fresh.clone());
        fresh
    }
}

/// How many times a change is rendered again because Helm applications had to be rendered
/// first (twice suffices unless the catalog changes in between).
const MAX_RENDER_PASSES: usize = 3;

fn render_passes_exhausted() -> AppError {
    AppError::Unavailable(
        "the catalog kept changing while Helm applications were rendered: try again".into(),
    )
}

impl App {
    /// The parameters of a deployment of package `name:version` with deployment profile
    /// `profile` (the package's default when empty), each application's profile selected as
    /// the renderer selects it (`canopy_deploy::render::application_profile_name`). Catalog
    /// read access; an unknown package or profile is NotFound, as the deployment's creation
    /// would answer.
    pub async fn deploy_parameters(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
        profile: &str,
    ) -> Result<DeployParameters, AppError> {
        ctx.require(Access::CatalogRead)?;
        let mut tx = self.store().read(ctx.project.id).await?;
        let PackageParts { package, apps, .. } = load_package(&mut tx, name, version).await?;
        let profile = if profile.is_empty() {
            package.default_profile_name.clone()
        } else {
            profile.to_string()
        };
        let dp = if profile.is_empty() {
            None
        } else {
            Some(package.profile(&profile).ok_or_else(|| {
                AppError::NotFound(format!(
                    "deployment profile {profile} not found in deployment package {name}:{version}"
                ))
            })?)
        };
        let apps = apps
            .iter()
            .map(|a| {
                let chosen = application_profile_name(dp, a);
                AppParameters {
                    name: a.name.clone(),
                    version: a.version.clone(),
                    templates: a
                        .profile(&chosen)
                        .map(|p| p.parameter_templates.clone())
                        .unwrap_or_default(),
                    profile: chosen,
                }
            })
            .collect();
        Ok(DeployParameters {
            package,
            profile,
            apps,
        })
    }

    /// Creates a deployment (and the child deployments its requirements need); returns its id.
    /// Helm applications are rendered first, with no lock held (see `app/helm.rs`).
    pub async fn create_deployment(&self, ctx: &Ctx, req: Deployment) -> Result<String, AppError> {
        ctx.require(Access::FleetWrite)?;
        let norm = normalize_request(&req)?;
        let org = self.project_org(ctx).await?;
        let mut renders = self.helm().snapshot();
        let mut ids = Vec::new();
        for _ in 0..MAX_RENDER_PASSES {
            match self
                .create_once(ctx, &norm, &org, renders.clone(), &mut ids)
                .await?
            {
                Ok(id) => return Ok(id),
                Err(pending) => renders.extend(self.helm().render_all(pending).await?),
            }
        }
        Err(render_passes_exhausted())
    }

    /// The organization owning the project (empty for a project from before organizations).
    async fn project_org(&self, ctx: &Ctx) -> Result<String, AppError> {
        Ok(self
            .store()
            .project_record(ctx.project.name.as_str())
            .await?
            .and_then(|r| r.org)
            .unwrap_or_default())
    }

    /// One pass of [`App::create_deployment`]: `Ok(Err(requests))` when Helm applications
    /// must be rendered first (nothing was written).
    async fn create_once(
        &self,
        ctx: &Ctx,
        norm: &Deployment,
        org: &str,
        renders: HelmRenders,
        ids: &mut Vec<(String, String)>,
    ) -> Result<Result<String, Vec<HelmRequest>>, AppError> {
        let hub = self.hub();
        let mut tx = FleetTx::open(self, ctx.project.id).await?;
        let existing = hub.deployments(ctx.project.id);
        let mut plan = Plan {
            renders,
            org: org.to_string(),
            ids: std::mem::take(ids),
            ..Plan::default()
        };
        let mut names: BTreeSet<String> = existing.iter().map(|d| d.name.clone()).collect();
        let rec = self
            .create_in_tx(
                ctx,
                &mut tx,
                norm.clone(),
                &existing,
                &mut names,
                &mut plan,
                0,
            )
            .await?;
        if !plan.pending.is_empty() {
            // Dropped without commit: rolled back.
            drop(tx);
            *ids = plan.ids;
            return Ok(Err(plan.pending));
        }
        for r in plan.put {
            if existing.iter().any(|e| e.id == r.id) {
                tx.update_deployment(&r.id, &r.to_row().body, r.update_time)
                    .await?;
            } else {
                tx.insert_deployment(&r.to_row()).await?;
            }
            tracing::info!(project = %ctx.project.name, deployment = %r.id, package = %format!("{}:{}", r.spec.app_name, r.spec.app_version), "deployment created");
            tx.record(HubOp::PutDeployment(Arc::new(r)));
        }
        tx.commit().await?;
        Ok(Ok(rec.id.clone()))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one transaction's context, passed down"
    )]
    async fn create_in_tx(
        &self,
        ctx: &Ctx,
        tx: &mut CatalogTx,
        norm: Deployment,
        existing: &[Arc<DeploymentRecord>],
        names: &mut BTreeSet<String>,
        plan: &mut Plan,
        depth: usize,
    ) -> Result<DeploymentRecord, AppError> {
        if depth > MAX_REQUIREMENT_DEPTH {
            return Err(AppError::FailedPrecondition(format!(
                "deployment requirements of {}:{} nest deeper than {MAX_REQUIREMENT_DEPTH} levels (a cycle?)",
                norm.app_name, norm.app_version
            )));
        }
        let parts = load_package(tx, &norm.app_name, &norm.app_version).await?;
        let app_names: Vec<String> = parts.apps.iter().map(|a| a.name.clone()).collect();
        let targets = targeting(&norm, &app_names)?;
        if targets.is_targeted() {
            for r in targets.edge_refs() {
                if self.hub().resolve_edge(ctx.project.id, r).is_none() {
                    return Err(AppError::NotFound(format!(
                        "targetClusters: edge {r} not found in project {}",
                        ctx.project.name
                    )));
                }
            }
        }
        let (id, name) = plan.next_id(names);
        names.insert(name.clone());
        let project = ctx.project.name.as_str();
        let policy = project_policy(tx).await?;
        let input = PackageInput {
            package: &parts.package,
            apps: parts.apps.iter().collect(),
            registries: &parts.registries,
            project,
            policy: &policy,
            org: &plan.org,
            helm: Some(&plan.renders),
        };
        let rendered = render_deployment(&input, &norm, &id, &name, None)?;
        plan.pending.extend(rendered.helm_pending.iter().cloned());
        let mut spec = norm;
        if spec.display_name.is_empty() {
            spec.display_name = name.clone();
        }
        spec.profile_name = rendered.profile_name.clone();
        spec.override_values = rendered.override_values.clone();
        check_duplicate(existing, plan, &spec, None)?;

        let now = OffsetDateTime::now_utc();
        let mut rec = DeploymentRecord {
            id,
            name,
            project_id: ctx.project.id,
            masked_overrides: rendered.masked_override_values.clone(),
            profile_name: rendered.profile_name.clone(),
            default_profile_name: parts.package.default_profile_name.clone(),
            generation: 1,
            apps: rendered.apps.clone(),
            targeting: targets,
            requirements: rendered.requirements.clone(),
            parents: Vec::new(),
            children: Vec::new(),
            deploy_in_progress: true,
            create_time: now,
            update_time: now,
            spec,
            warnings: rendered.warnings.clone(),
            manifests: manifests_of(&rendered),
        };
        set_deployed(tx, &rec.spec.app_name, &rec.spec.app_version, true).await?;

        // Deployment requirements: a child deployment per required package, or the existing
        // one when the package forbids several.
        let mut seen = BTreeSet::new();
        for r in &rendered.requirements {
            if !seen.insert((r.package.clone(), r.version.clone(), r.profile.clone())) {
                continue;
            }
            let child_id = self
                .child_for(ctx, tx, &rec, r, existing, names, plan, depth)
                .await?;
            if !rec.children.contains(&child_id) {
                rec.children.push(child_id);
            }
        }
        plan.put.push(rec.clone());
        Ok(rec)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one transaction's context, passed down"
    )]
    async fn child_for(
        &self,
        ctx: &Ctx,
        tx: &mut CatalogTx,
        parent: &DeploymentRecord,
        r: &Requirement,
        existing: &[Arc<DeploymentRecord>],
        names: &mut BTreeSet<String>,
        plan: &mut Plan,
        depth: usize,
    ) -> Result<String, AppError> {
        let required = tx
            .get_package(&r.package, &r.version)
            .await?
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "deployment package {}:{} required by application {} not found",
                    r.package, r.version, r.app
                ))
            })?;
        if required.forbids_multiple_deployments {
            let mut same: Vec<DeploymentRecord> = existing
                .iter()
                .filter(|d| d.spec.app_name == r.package)
                .map(|d| (**d).clone())
                .collect();
            // Prefer a copy already changed in this transaction.
            for d in &mut same {
                if let Some(p) = plan.put.iter().find(|p| p.id == d.id) {
                    *d = p.clone();
                }
            }
            match same.len() {
                0 => {}
                1 => {
                    let mut reused = same.remove(0);
                    if !reused.parents.contains(&parent.id) {
                        reused.parents.push(parent.id.clone());
                    }
                    let id = reused.id.clone();
                    plan.put.retain(|p| p.id != id);
                    plan.put.push(reused);
                    return Ok(id);
                }
                n => {
                    return Err(AppError::AlreadyExists(format!(
                        "deployment package {} forbids multiple deployments and {n} deployments of it exist in this project",
                        r.package
                    )));
                }
            }
        }
        // A new child, targeted at the parent's first target.
        let first = parent
            .spec
            .all_app_target_clusters
            .clone()
            .or_else(|| parent.spec.target_clusters.first().cloned())
            .unwrap_or_default();
        let child = Deployment {
            app_name: r.package.clone(),
            app_version: r.version.clone(),
            profile_name: r.profile.clone(),
            deployment_type: parent.spec.deployment_type.clone(),
            all_app_target_clusters: Some(TargetClusters {
                app_name: String::new(),
                cluster_id: first.cluster_id,
                labels: first.labels,
            }),
            ..Default::default()
        };
        let child = normalize_request(&child)?;
        let mut rec =
            Box::pin(self.create_in_tx(ctx, tx, child, existing, names, plan, depth + 1)).await?;
        rec.parents.push(parent.id.clone());
        let id = rec.id.clone();
        plan.put.retain(|p| p.id != id);
        plan.put.push(rec);
        Ok(id)
    }

    /// The manifest Helm rendered for a Helm application of a deployment (what a Kubernetes
    /// edge would apply). Deployment read access; Secret values and secret parameter values
    /// are masked unless the caller also has deployment write access (who could set them).
    pub fn deployment_manifest(&self, ctx: &Ctx, id: &str, app: &str) -> Result<String, AppError> {
        ctx.require(Access::FleetRead)?;
        let rec = self
            .hub()
            .deployment(ctx.project.id, id)
            .ok_or_else(|| deployment_not_found(id))?;
        let Some(manifest) = rec.manifests.get(app) else {
            return Err(AppError::NotFound(
                if rec.apps.iter().any(|a| a.name == app) {
                    format!(
                        "application {app} of deployment {id} is not a Helm chart application: \
                         it has no manifest"
                    )
                } else {
                    format!("deployment {id} has no application {app}")
                },
            ));
        };
        if ctx.require(Access::FleetWrite).is_ok() {
            return Ok(manifest.clone());
        }
        let mut secrets = Vec::new();
        for real in &rec.spec.override_values {
            if let Some(masked) = rec
                .masked_overrides
                .iter()
                .find(|m| m.app_name == real.app_name)
                && let (Some(r), Some(m)) = (&real.values, &masked.values)
            {
                secret_values(r, m, &mut secrets);
            }
        }
        redact_manifest(manifest, &secrets)
    }

    /// One deployment with its status and the apps of every edge.
    pub fn get_deployment(&self, ctx: &Ctx, id: &str) -> Result<Deployment, AppError> {
        ctx.require(Access::FleetRead)?;
        let rec = self
            .hub()
            .deployment(ctx.project.id, id)
            .ok_or_else(|| deployment_not_found(id))?;
        let (status, clusters) = self.hub().deployment_status(&rec.id).unwrap_or_default();
        let mut d = to_api(&rec, status);
        d.apps = clusters.into_iter().flat_map(|c| c.apps).collect();
        Ok(d)
    }

    /// Deployments of the project: `labels` filter (any given k=v in any target label set), then
    /// filter, order and page. `totalElements` counts after the label filter and before
    /// filter/paging, as the reference does.
    pub fn list_deployments(
        &self,
        ctx: &Ctx,
        raw: Option<&str>,
    ) -> Result<(Vec<Deployment>, u64), AppError> {
        let o = self.overview(ctx, raw, false)?;
        Ok((o.page, o.total))
    }

    /// What the web console's deployments page shows, folding each deployment's status once:
    /// the summary of every deployment's edges (as [`App::deployments_status`] without
    /// `labels`, whatever `raw`'s `labels` say) and a page of the list (as
    /// [`App::list_deployments`]), with the number that matched the filter.
    pub fn deployments_overview(
        &self,
        ctx: &Ctx,
        raw: Option<&str>,
    ) -> Result<DeploymentsOverview, AppError> {
        self.overview(ctx, raw, true)
    }

    /// [`App::deployments_overview`]; without `summary`, deployments the `labels` filter leaves
    /// out are not folded (and the summary is empty).
    fn overview(
        &self,
        ctx: &Ctx,
        raw: Option<&str>,
        summary: bool,
    ) -> Result<DeploymentsOverview, AppError> {
        ctx.require(Access::FleetRead)?;
        let q = list_query(Entity::Deployment, raw)?;
        let mut all = Vec::new();
        let mut statuses = Vec::new();
        for rec in self.hub().deployments(ctx.project.id) {
            let listed = q.labels.is_empty() || labels_filter_matches(&rec.targeting, &q.labels)?;
            if !listed && !summary {
                continue;
            }
            let status = self.hub().deployment_folded(&rec.id);
            if summary && let Some(s) = &status {
                statuses.push(s.clone());
            }
            if listed {
                all.push(to_api(&rec, status.unwrap_or_default()));
            }
        }
        let total = all.len() as u64;
        let (page, matched) = q.page_in_memory(all, |d, f| match f {
            Field::Name => d.name.clone(),
            Field::DisplayName => d.display_name.clone(),
            Field::AppName => d.app_name.clone(),
            Field::AppVersion => d.app_version.clone(),
            Field::DeployId => d.deploy_id.clone(),
            Field::Status => d
                .status
                .as_ref()
                .map(|s| s.state.as_str().to_string())
                .unwrap_or_default(),
            Field::CreateTime => super::edges::fmt_time(d.create_time),
            _ => String::new(),
        });
        Ok(DeploymentsOverview {
            summary: canopy_deploy::status::summarize(&statuses),
            page,
            total,
            matched,
        })
    }

    /// Updates a deployment: display name, profile, override values, targets, or another
    /// version of the same package (upgrade or downgrade). Helm applications are rendered
    /// first, with no lock held (see `app/helm.rs`).
    pub async fn update_deployment(
        &self,
        ctx: &Ctx,
        id: &str,
        req: Deployment,
    ) -> Result<Deployment, AppError> {
        ctx.require(Access::FleetWrite)?;
        let norm = normalize_request(&req)?;
        let org = self.project_org(ctx).await?;
        let mut renders = self.helm().snapshot();
        for _ in 0..MAX_RENDER_PASSES {
            match self.update_once(ctx, id, &norm, &org, &renders).await? {
                Ok(()) => return self.get_deployment(ctx, id),
                Err(pending) => renders.extend(self.helm().render_all(pending).await?),
            }
        }
        Err(render_passes_exhausted())
    }

    /// One pass of [`App::update_deployment`]: `Ok(Err(requests))` when Helm applications
    /// must be rendered first (nothing was written).
    async fn update_once(
        &self,
        ctx: &Ctx,
        id: &str,
        norm: &Deployment,
        org: &str,
        renders: &HelmRenders,
    ) -> Result<Result<(), Vec<HelmRequest>>, AppError> {
        let norm = norm.clone();
        let hub = self.hub();
        let mut tx = FleetTx::open(self, ctx.project.id).await?;
        let old = hub
            .deployment(ctx.project.id, id)
            .ok_or_else(|| deployment_not_found(id))?;
        if !old.parents.is_empty() {
            return Err(AppError::Aborted(format!(
                "deployment {} is required by deployment(s) {}: update those instead",
                old.id,
                old.parents.join(", ")
            )));
        }
        if norm.app_name != old.spec.app_name {
            return Err(AppError::Invalid(format!(
                "appName {:?} must match the deployment's package {:?}: deploy another package as a new deployment",
                norm.app_name, old.spec.app_name
            )));
        }
        let existing = hub.deployments(ctx.project.id);
        let parts = load_package(&mut tx, &norm.app_name, &norm.app_version).await?;
        let app_names: Vec<String> = parts.apps.iter().map(|a| a.name.clone()).collect();
        let requested = targeting(&norm, &app_names)?;
        let targets = update_targets(&old.targeting, &requested);
        let mut merged = norm;
        if targets != requested {
            // Label sets accumulated: show the effective per-app targets.
            merged.target_clusters = targets.to_target_clusters();
            merged.all_app_target_clusters = None;
        }
        if targets.is_targeted() {
            for r in targets.edge_refs() {
                if hub.resolve_edge(ctx.project.id, r).is_none() {
                    return Err(AppError::NotFound(format!(
                        "targetClusters: edge {r} not found in project {}",
                        ctx.project.name
                    )));
                }
            }
        }
        let policy = project_policy(&mut tx).await?;
        let input = PackageInput {
            package: &parts.package,
            apps: parts.apps.iter().collect(),
            registries: &parts.registries,
            project: ctx.project.name.as_str(),
            policy: &policy,
            org,
            helm: Some(renders),
        };
        let rendered = render_deployment(
            &input,
            &merged,
            &old.id,
            &old.name,
            Some(&old.spec.override_values),
        )?;
        if !rendered.helm_pending.is_empty() {
            // Dropped without commit: rolled back.
            drop(tx);
            return Ok(Err(rendered.helm_pending));
        }
        let key = |rs: &[Requirement]| -> BTreeSet<(String, String, String)> {
            rs.iter()
                .map(|r| (r.package.clone(), r.version.clone(), r.profile.clone()))
                .collect()
        };
        if key(&rendered.requirements) != key(&old.requirements) {
            return Err(AppError::Aborted(format!(
                "this change would change the packages deployment {} requires; delete it and deploy again",
                old.id
            )));
        }
        let mut spec = merged;
        if spec.display_name.is_empty() {
            spec.display_name = old.name.clone();
        }
        spec.profile_name = rendered.profile_name.clone();
        spec.override_values = rendered.override_values.clone();
        check_duplicate(&existing, &Plan::default(), &spec, Some(&old.id))?;

        let mut rec = (*old).clone();
        let version_changed = spec.app_version != old.spec.app_version;
        rec.manifests = manifests_of(&rendered);
        rec.warnings = rendered.warnings;
        rec.masked_overrides = rendered.masked_override_values;
        rec.profile_name = rendered.profile_name;
        rec.default_profile_name = parts.package.default_profile_name.clone();
        rec.generation += 1;
        rec.apps = rendered.apps;
        rec.targeting = targets;
        rec.requirements = rendered.requirements;
        rec.deploy_in_progress = true;
        rec.update_time = OffsetDateTime::now_utc().max(old.update_time);
        rec.spec = spec;
        if version_changed {
            set_deployed(&mut tx, &rec.spec.app_name, &rec.spec.app_version, true).await?;
            let still_used = existing.iter().any(|d| {
                d.id != old.id
                    && d.spec.app_name == old.spec.app_name
                    && d.spec.app_version == old.spec.app_version
            });
            if !still_used {
                set_deployed(&mut tx, &old.spec.app_name, &old.spec.app_version, false).await?;
            }
        }
        tx.update_deployment(&rec.id, &rec.to_row().body, rec.update_time)
            .await?;
        tracing::info!(project = %ctx.project.name, deployment = %rec.id, generation = rec.generation, version = %rec.spec.app_version, "deployment updated");
        tx.record(HubOp::PutDeployment(Arc::new(rec)));
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Deletes a deployment (`PARENT_ONLY`) or it and the deployments it required (`ALL`).
    /// Edges are told at once; their agents remove the workloads.
    pub async fn delete_deployment(
        &self,
        ctx: &Ctx,
        id: &str,
        delete_type: DeleteType,
    ) -> Result<(), AppError> {
        ctx.require(Access::FleetWrite)?;
        let hub = self.hub();
        let mut tx = FleetTx::open(self, ctx.project.id).await?;
        let root = hub
            .deployment(ctx.project.id, id)
            .ok_or_else(|| deployment_not_found(id))?;
        if !root.parents.is_empty() {
            return Err(AppError::Aborted(format!(
                "deployment {} is required by deployment(s) {}: delete those first (or with deleteType=ALL)",
                root.id,
                root.parents.join(", ")
            )));
        }
        let all = hub.deployments(ctx.project.id);
        let by_id: BTreeMap<&str, &Arc<DeploymentRecord>> =
            all.iter().map(|d| (d.id.as_str(), d)).collect();
        let mut doomed: BTreeSet<String> = BTreeSet::from([root.id.clone()]);
        if delete_type == DeleteType::All {
            let mut stack = root.children.clone();
            while let Some(c) = stack.pop() {
                if doomed.insert(c.clone())
                    && let Some(d) = by_id.get(c.as_str())
                {
                    stack.extend(d.children.iter().cloned());
                }
            }
            for d in &doomed {
                if let Some(rec) = by_id.get(d.as_str())
                    && let Some(outside) = rec.parents.iter().find(|p| !doomed.contains(*p))
                {
                    return Err(AppError::Aborted(format!(
                        "deployment {d} is also required by deployment {outside}, which is not being deleted"
                    )));
                }
            }
        }
        for d in &doomed {
            tx.delete_deployment(d).await?;
            tracing::info!(project = %ctx.project.name, deployment = %d, "deployment deleted");
            tx.record(HubOp::RemoveDeployment(d.clone()));
        }
        // Survivors that listed a deleted deployment as parent forget it.
        for d in &all {
            if doomed.contains(&d.id) {
                continue;
            }
            if d.parents.iter().any(|p| doomed.contains(p)) {
                let mut rec = (**d).clone();
                rec.parents.retain(|p| !doomed.contains(p));
                tx.update_deployment(&rec.id, &rec.to_row().body, rec.update_time)
                    .await?;
                tx.record(HubOp::PutDeployment(Arc::new(rec)));
            }
        }
        // isDeployed cleared on packages no surviving deployment uses.
        let packages: BTreeSet<(String, String)> = doomed
            .iter()
            .filter_map(|d| by_id.get(d.as_str()))
            .map(|d| (d.spec.app_name.clone(), d.spec.app_version.clone()))
            .collect();
        for (name, version) in packages {
            let used = all.iter().any(|d| {
                !doomed.contains(&d.id) && d.spec.app_name == name && d.spec.app_version == version
            });
            if !used {
                set_deployed(&mut tx, &name, &version, false).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The edges of a deployment with their per-app status.
    pub fn deployment_clusters(
        &self,
        ctx: &Ctx,
        id: &str,
        raw: Option<&str>,
    ) -> Result<DeploymentClusters, AppError> {
        Ok(self.deployment_with_clusters(ctx, id, raw)?.1)
    }

    /// One deployment (without `apps`: they are in the clusters) and a page of its edges with
    /// their per-app status (as [`App::deployment_clusters`]), folding its status once: the web
    /// console's deployment page.
    pub fn deployment_with_clusters(
        &self,
        ctx: &Ctx,
        id: &str,
        raw: Option<&str>,
    ) -> Result<(Deployment, DeploymentClusters), AppError> {
        ctx.require(Access::FleetRead)?;
        let q = list_query(Entity::DeploymentCluster, raw)?;
        let rec = self
            .hub()
            .deployment(ctx.project.id, id)
            .ok_or_else(|| deployment_not_found(id))?;
        let (status, clusters) = self.hub().deployment_status(&rec.id).unwrap_or_default();
        let total = clusters.len() as u64;
        let (clusters, _) = q.page_in_memory(clusters, |c, f| match f {
            Field::Name => c.name.clone(),
            Field::Id => c.id.clone(),
            Field::Status => c.status.state.as_str().to_string(),
            _ => String::new(),
        });
        Ok((to_api(&rec, status), DeploymentClusters { clusters, total }))
    }

    /// A page of a deployment's edges filtered by name and, optionally, to the edges with a
    /// problem ([`is_problem`]), in edge-name order: the web console's deployment page. Folds
    /// the deployment's status once; costs O(edges of the deployment) plus the page.
    pub fn deployment_edges(
        &self,
        ctx: &Ctx,
        id: &str,
        q: &DeploymentEdgeQuery,
    ) -> Result<DeploymentEdges, AppError> {
        ctx.require(Access::FleetRead)?;
        let rec = self
            .hub()
            .deployment(ctx.project.id, id)
            .ok_or_else(|| deployment_not_found(id))?;
        let (status, clusters) = self.hub().deployment_status(&rec.id).unwrap_or_default();
        let since_change = (OffsetDateTime::now_utc() - rec.update_time)
            .try_into()
            .unwrap_or(std::time::Duration::ZERO);
        let needle = q.name.trim().to_lowercase();
        let total = clusters.len() as u64;
        let mut problems = 0u64;
        let mut matched = 0u64;
        let mut page = Vec::new();
        for c in clusters {
            let problem = is_problem(c.status.state, since_change);
            problems += u64::from(problem);
            if (q.problems_only && !problem)
                || (!needle.is_empty() && !c.name.to_lowercase().contains(&needle))
            {
                continue;
            }
            matched += 1;
            if matched > q.offset && (page.len() as u64) < q.limit {
                page.push(c);
            }
        }
        let edges = page
            .into_iter()
            .map(|cluster| DeploymentEdge {
                last_seen: self
                    .hub()
                    .edge(ctx.project.id, &cluster.id)
                    .and_then(|e| e.last_seen),
                cluster,
            })
            .collect();
        Ok(DeploymentEdges {
            deployment: to_api(&rec, status),
            edges,
            total,
            matched,
            problems,
        })
    }

    /// The ids of the deployments created (or reused) for a deployment's requirements (what
    /// `deleteType=ALL` may delete with it).
    pub fn deployment_children(&self, ctx: &Ctx, id: &str) -> Result<Vec<String>, AppError> {
        ctx.require(Access::FleetRead)?;
        let rec = self
            .hub()
            .deployment(ctx.project.id, id)
            .ok_or_else(|| deployment_not_found(id))?;
        Ok(rec.children.clone())
    }

    /// A receiver that wakes when the project's deployment or edge views change (see
    /// `Hub::watch_changes`), for live pages. Needs fleet read access.
    pub fn watch_fleet(&self, ctx: &Ctx) -> Result<tokio::sync::watch::Receiver<u64>, AppError> {
        ctx.require(Access::FleetRead)?;
        Ok(self.hub().watch_changes(ctx.project.id))
    }

    /// The deployments running on one edge.
    pub fn deployments_on_cluster(
        &self,
        ctx: &Ctx,
        cluster: &str,
        raw: Option<&str>,
    ) -> Result<(Vec<DeploymentInstancesCluster>, u64), AppError> {
        ctx.require(Access::FleetRead)?;
        let q = list_query(Entity::Cluster, raw)?;
        let edge = self
            .hub()
            .resolve_edge(ctx.project.id, cluster)
            .ok_or_else(|| edge_not_found(cluster))?;
        let mut out = Vec::new();
        for (rec, c) in self.hub().edge_deployments(&edge) {
            if !q.labels.is_empty() && !labels_filter_matches(&rec.targeting, &q.labels)? {
                continue;
            }
            out.push(DeploymentInstancesCluster {
                apps: c.apps,
                deployment_display_name: rec.spec.display_name.clone(),
                deployment_name: rec.name.clone(),
                deployment_uid: rec.id.clone(),
                status: c.status,
            });
        }
        let total = out.len() as u64;
        let (page, _) = q.page_in_memory(out, |d, f| match f {
            Field::Name => d.deployment_name.clone(),
            Field::Id => d.deployment_uid.clone(),
            _ => String::new(),
        });
        Ok((page, total))
    }

    /// `deployments_status`: clusters counted by state over the deployments matching `labels`.
    pub fn deployments_status(
        &self,
        ctx: &Ctx,
        raw: Option<&str>,
    ) -> Result<DeploymentsStatus, AppError> {
        ctx.require(Access::FleetRead)?;
        let pairs = canopy_core::list::form_pairs(raw.unwrap_or(""))?;
        let mut labels = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "labels" => labels.push(v),
                other => {
                    return Err(AppError::Invalid(format!(
                        "unknown query parameter {other:?}"
                    )));
                }
            }
        }
        let mut statuses = Vec::new();
        for rec in self.hub().deployments(ctx.project.id) {
            if !labels.is_empty() && !labels_filter_matches(&rec.targeting, &labels)? {
                continue;
            }
            if let Some(s) = self.hub().deployment_folded(&rec.id) {
                statuses.push(s);
            }
        }
        Ok(canopy_deploy::status::summarize(&statuses))
    }

    /// UI extensions of the deployed packages (`serviceName` filter: any of the given names;
    /// empty = all), in deployment order, without duplicates.
    pub async fn ui_extensions(
        &self,
        ctx: &Ctx,
        service_names: &[String],
    ) -> Result<Vec<canopy_core::catalog::UiExtension>, AppError> {
        ctx.require(Access::FleetRead)?;
        let mut packages = Vec::new();
        for rec in self.hub().deployments(ctx.project.id) {
            let key = (rec.spec.app_name.clone(), rec.spec.app_version.clone());
            if !packages.contains(&key) {
                packages.push(key);
            }
        }
        let mut out: Vec<canopy_core::catalog::UiExtension> = Vec::new();
        let mut tx = self.store().read(ctx.project.id).await?;
        for (name, version) in packages {
            let Some(p) = tx.get_package(&name, &version).await? else {
                continue;
            };
            for ext in p.extensions {
                if let Some(ui) = ext.ui_extension
                    && (service_names.is_empty() || service_names.contains(&ui.service_name))
                    && !out.contains(&ui)
                {
                    out.push(ui);
                }
            }
        }
        Ok(out)
    }

    /// The reference's cluster inventory: edges with id, name, labels and creation time.
    pub fn list_clusters(
        &self,
        ctx: &Ctx,
        raw: Option<&str>,
    ) -> Result<(Vec<ClusterInfo>, u64), AppError> {
        ctx.require(Access::FleetRead)?;
        let q = list_query(Entity::Cluster, raw)?;
        let filters = parse_label_filters(&q.labels)?;
        let mut edges: Vec<ClusterInfo> = self
            .hub()
            .edges(ctx.project.id)
            .into_iter()
            .filter(|e| labels_match(&filters, &e.labels))
            .map(|e| ClusterInfo {
                create_time: Some(e.create_time),
                id: e.id,
                labels: e.labels,
                name: e.name,
            })
            .collect();
        edges.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        let total = edges.len() as u64;
        let (page, _) = q.page_in_memory(edges, |c, f| match f {
            Field::Name => c.name.clone(),
            Field::Id => c.id.clone(),
            _ => String::new(),
        });
        Ok((page, total))
    }

    /// One edge as the reference's `GET /clusters/{id}` shows it: its state and every app it
    /// runs.
    pub fn get_cluster(&self, ctx: &Ctx, id: &str) -> Result<Cluster, AppError> {
        ctx.require(Access::FleetRead)?;
        let edge = self
            .hub()
            .edge(ctx.project.id, id)
            .ok_or_else(|| edge_not_found(id))?;
        let apps: Vec<ApiApp> = self
            .hub()
            .edge_deployments(&edge.id)
            .into_iter()
            .flat_map(|(_, c)| c.apps)
            .collect();
        Ok(Cluster {
            apps,
            id: edge.id,
            name: edge.name,
            status: DeploymentStatus {
                state: if edge.alive {
                    State::Running
                } else {
                    State::Unknown
                },
                message: String::new(),
                summary: None,
            },
        })
    }
}

fn deployment_not_found(id: &str) -> AppError {
    AppError::NotFound(format!("deployment {id} not found"))
}

/// The reference's duplicate rule: another deployment of the same package, version and profile
/// with the same display name.
fn check_duplicate(
    existing: &[Arc<DeploymentRecord>],
    plan: &Plan,
    spec: &Deployment,
    except: Option<&str>,
) -> Result<(), AppError> {
    let clash = existing
        .iter()
        .map(|d| (&d.id, &d.spec))
        .chain(plan.put.iter().map(|d| (&d.id, &d.spec)))
        .find(|(id, d)| {
            Some(id.as_str()) != except
                && d.app_name == spec.app_name
                && d.app_version == spec.app_version
                && d.profile_name == spec.profile_name
                && d.display_name == spec.display_name
        });
    match clash {
        Some((id, _)) => Err(AppError::AlreadyExists(format!(
            "Duplicate deployment exists with same name {:?} for {}:{} profile {} (deployment {id})",
            spec.display_name, spec.app_name, spec.app_version, spec.profile_name
        ))),
        None => Ok(()),
    }
}

/// The API view of a record: masked override values, output fields filled.
fn to_api(rec: &DeploymentRecord, status: DeploymentStatus) -> Deployment {
    let mut d = rec.spec.clone();
    d.override_values = rec.masked_overrides.clone();
    d.deploy_id = rec.id.clone();
    d.name = rec.name.clone();
    d.create_time = Some(rec.create_time);
    d.default_profile_name = rec.default_profile_name.clone();
    d.profile_name = rec.profile_name.clone();
    if d.deployment_type.is_empty() {
        d.deployment_type = canopy_deploy::model::AUTO_SCALING.into();
    }
    d.status = Some(status);
    d.warnings = rec.warnings.clone();
    d
}

/// Secret values of a deployment's override values: where the masked copy shows the mask, the
/// real value (strings, numbers, booleans).
fn secret_values(real: &serde_json::Value, masked: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (real, masked) {
        (Value::Object(r), Value::Object(m)) => {
            for (k, rv) in r {
                if let Some(mv) = m.get(k) {
                    secret_values(rv, mv, out);
                }
            }
        }
        (Value::Array(r), Value::Array(m)) => {
            for (rv, mv) in r.iter().zip(m) {
                secret_values(rv, mv, out);
            }
        }
        (rv, Value::String(m)) if m == canopy_core::template::SECRET_MASK && rv != masked => {
            match rv {
                Value::String(s) if !s.is_empty() => out.push(s.clone()),
                Value::Number(_) | Value::Bool(_) => out.push(rv.to_string()),
                _ => {}
            }
        }
        _ => {}
    }
}

/// A manifest as readers without write access see it: every Secret's `data` and `stringData`
/// values replaced by the mask, and every secret parameter value of the deployment's override
/// values too, wherever the chart put it. The documents are written out again (YAML, each
/// after its `# Source:` line).
fn redact_manifest(manifest: &str, secrets: &[String]) -> Result<String, AppError> {
    let mask = canopy_core::template::SECRET_MASK;
    let docs = canopy_helm::manifest::parse(manifest)
        .map_err(|e| AppError::Internal(format!("stored manifest unreadable: {e}")))?;
    let mut out = String::new();
    for mut doc in docs {
        if doc.kind() == "Secret" {
            for field in ["data", "stringData"] {
                if let Some(serde_json::Value::Object(m)) = doc.object.get_mut(field) {
                    for v in m.values_mut() {
                        *v = serde_json::Value::String(mask.into());
                    }
                }
            }
        }
        out.push_str("---\n");
        if !doc.source.is_empty() {
            out.push_str(&format!("# Source: {}\n", doc.source));
        }
        let text = serde_saphyr::to_string(&doc.object)
            .map_err(|e| AppError::Internal(format!("manifest: {e}")))?;
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    let mut secrets: Vec<&String> = secrets.iter().collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(s.as_str(), mask);
    }
    Ok(out)
}

/// The rendered manifests of a deployment's Helm applications, as the record keeps them.
fn manifests_of(rendered: &Rendered) -> BTreeMap<String, String> {
    rendered
        .manifests
        .iter()
        .map(|(app, m)| (app.clone(), m.to_string()))
        .collect()
}
