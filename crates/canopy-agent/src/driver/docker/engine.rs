//! The engine calls the driver makes, one object kind at a time, each with a timeout and an
//! error naming what it did to which object. Idempotent where the engine is not: starting a
//! running container, removing a missing one or creating a network that appeared meanwhile
//! succeed.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateImageOptions, InspectNetworkOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use canopy_proto::AppInstance;
use futures::{StreamExt, TryStreamExt};
use tracing::{debug, info};

use super::{API_TIMEOUT, DockerDriver, PULL_TIMEOUT, REMOVE_CONCURRENCY, label_is, summary_name};
use crate::driver::error::DriverError;
use crate::driver::names;
use crate::driver::podman;
use crate::driver::spec;

impl DockerDriver {
    /// Pulls `image` with the app's registry credentials, if it has any.
    pub(super) async fn pull(
        &self,
        image: &str,
        target: &str,
        app: &AppInstance,
    ) -> Result<(), DriverError> {
        let (repo, tag) = spec::pull_ref(image);
        let options = CreateImageOptions {
            from_image: Some(repo),
            tag: Some(tag),
            ..Default::default()
        };
        // Credentials go to the engine only; they are never logged (RegistryAuth's Debug is
        // redacted, and only the server is named here).
        let credentials = app.registry_auth.as_ref().map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        info!(
            image = %image,
            registry = app.registry_auth.as_ref().map(|a| a.server.as_str()).unwrap_or("(anonymous)"),
            "pulling image"
        );
        let progress = self
            .docker
            .create_image(Some(options), None, credentials)
            .try_for_each(|_| futures::future::ready(Ok(())));
        self.call("pull", target, PULL_TIMEOUT, progress).await
    }

    /// Starts a container; one that already runs is fine.
    pub(super) async fn start(&self, name: &str, app: &str) -> Result<(), DriverError> {
        let target = format!("container {name} (app {app})");
        match self
            .call(
                "start",
                &target,
                API_TIMEOUT,
                self.docker.start_container(name, None),
            )
            .await
        {
            // 304: already running.
            Err(e) if e.status_code() == Some(304) => Ok(()),
            other => other,
        }
    }

    /// `Ok(None)` when the container does not exist.
    pub(super) async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, DriverError> {
        let target = format!("container {name}");
        match self
            .call(
                "inspect",
                &target,
                API_TIMEOUT,
                self.docker.inspect_container(name, None),
            )
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) if e.is_decode_error() => {
                debug!(container = %name, error = %e.chain(), "undecodable inspect; reading it leniently");
                let path = format!("/containers/{}/json", podman::encode(name));
                match self.get_lenient("inspect", &target, &path).await {
                    Ok(value) => {
                        serde_json::from_value(value)
                            .map(Some)
                            .map_err(|e| DriverError::Engine {
                                op: "inspect",
                                target,
                                source: Box::new(e),
                            })
                    }
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `GET path` of the engine API as JSON with Podman's extra states mapped onto Docker's (see
    /// `driver::podman`), for answers bollard's types cannot decode.
    pub(super) async fn get_lenient(
        &self,
        op: &'static str,
        target: &str,
        path: &str,
    ) -> Result<serde_json::Value, DriverError> {
        let version = self.docker.client_version();
        let path = format!(
            "/v{}.{}{path}",
            version.major_version, version.minor_version
        );
        match tokio::time::timeout(API_TIMEOUT, podman::get_json(&self.endpoint, &path)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(DriverError::Engine {
                op,
                target: target.to_string(),
                source: Box::new(e),
            }),
            Err(_) => Err(DriverError::Timeout {
                op,
                target: target.to_string(),
                timeout: API_TIMEOUT,
            }),
        }
    }

    /// Creates the namespace network (labelled as Canopy's) unless a network of that name exists.
    pub(super) async fn ensure_network(
        &self,
        name: &str,
        project: &str,
        namespace: &str,
    ) -> Result<(), DriverError> {
        let target = format!("network {name}");
        match self
            .call(
                "inspect",
                &target,
                API_TIMEOUT,
                self.docker
                    .inspect_network(name, None::<InspectNetworkOptions>),
            )
            .await
        {
            Ok(n) => {
                if !names::is_ours(n.labels.as_ref(), self.scope()) {
                    debug!(network = %name, "using a network Canopy did not create");
                }
                return Ok(());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // A user-defined bridge network: Docker resolves container names and aliases on it, and
        // so does Podman (its compatible API creates networks with DNS enabled).
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(names::network_labels(self.scope(), project, namespace)),
            ..Default::default()
        };
        match self
            .call(
                "create",
                &target,
                API_TIMEOUT,
                self.docker.create_network(request),
            )
            .await
        {
            Ok(_) => {
                info!(network = %name, "created network");
                Ok(())
            }
            // Created meanwhile by someone else: fine.
            Err(e) if e.status_code() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a named volume (labelled as Canopy's) unless it exists; an existing one keeps its data.
    pub(super) async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), DriverError> {
        let target = format!("volume {name}");
        match self
            .call(
                "inspect",
                &target,
                API_TIMEOUT,
                self.docker.inspect_volume(name),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        };
        self.call(
            "create",
            &target,
            API_TIMEOUT,
            self.docker.create_volume(request),
        )
        .await?;
        info!(volume = %name, "created volume");
        Ok(())
    }

    /// Canopy containers (of this scope) with the extra labels, running or not.
    pub(super) async fn list_containers(
        &self,
        extra: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, DriverError> {
        Ok(self
            .list_containers_by(names::filters(self.scope(), extra))
            .await?
            .into_iter()
            .filter(|c| names::is_ours(c.labels.as_ref(), self.scope()))
            .filter(|c| extra.iter().all(|(k, v)| label_is(c.labels.as_ref(), k, v)))
            .collect())
    }

    /// Canopy containers of an earlier release (managed, no owner), running or not.
    pub(super) async fn list_legacy_containers(
        &self,
    ) -> Result<Vec<ContainerSummary>, DriverError> {
        // Engines filter on labels present, not absent: every Canopy container, then in code.
        Ok(self
            .list_containers_by(names::filters(None, &[]))
            .await?
            .into_iter()
            .filter(|c| names::is_legacy(c.labels.as_ref()))
            .collect())
    }

    /// Containers matching engine list filters, running or not.
    async fn list_containers_by(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerSummary>, DriverError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let filters = options.filters.clone().unwrap_or_default();
        let list = match self
            .call(
                "list",
                "containers",
                API_TIMEOUT,
                self.docker.list_containers(Some(options)),
            )
            .await
        {
            Ok(list) => list,
            Err(e) if e.is_decode_error() => {
                debug!(error = %e.chain(), "undecodable container list; reading it leniently");
                let query = serde_json::to_string(&filters).unwrap_or_default();
                let path = format!("/containers/json?all=1&filters={}", podman::encode(&query));
                let value = self.get_lenient("list", "containers", &path).await?;
                serde_json::from_value(value).map_err(|e| DriverError::Engine {
                    op: "list",
                    target: "containers".into(),
                    source: Box::new(e),
                })?
            }
            Err(e) => return Err(e),
        };
        Ok(list)
    }

    /// Names of Canopy volumes (of this scope) with the extra labels.
    pub(super) async fn list_volumes(
        &self,
        extra: &[(&str, &str)],
    ) -> Result<Vec<String>, DriverError> {
        Ok(self
            .list_volumes_labelled(extra)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Canopy volumes (of this scope) with the extra labels, with all their labels.
    pub(super) async fn list_volumes_labelled(
        &self,
        extra: &[(&str, &str)],
    ) -> Result<Vec<(String, HashMap<String, String>)>, DriverError> {
        let options = ListVolumesOptions {
            filters: Some(names::filters(self.scope(), extra)),
        };
        let list = self
            .call(
                "list",
                "volumes",
                API_TIMEOUT,
                self.docker.list_volumes(Some(options)),
            )
            .await?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| names::is_ours(Some(&v.labels), self.scope()))
            .filter(|v| {
                extra
                    .iter()
                    .all(|(k, val)| label_is(Some(&v.labels), k, val))
            })
            .map(|v| (v.name, v.labels))
            .collect())
    }

    /// Names of Canopy volumes of an earlier release (managed, no owner), with the deployment
    /// each was made for.
    pub(super) async fn list_legacy_volumes(&self) -> Result<Vec<(String, String)>, DriverError> {
        let options = ListVolumesOptions {
            filters: Some(names::filters(None, &[])),
        };
        let list = self
            .call(
                "list",
                "volumes",
                API_TIMEOUT,
                self.docker.list_volumes(Some(options)),
            )
            .await?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| names::is_legacy(Some(&v.labels)))
            .map(|v| {
                let deployment = v.labels.get(names::DEPLOYMENT).cloned().unwrap_or_default();
                (v.name, deployment)
            })
            .collect())
    }

    /// The labels of volume `name`; `None` when it does not exist.
    pub(super) async fn volume_labels(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, DriverError> {
        let target = format!("volume {name}");
        match self
            .call(
                "inspect",
                &target,
                API_TIMEOUT,
                self.docker.inspect_volume(name),
            )
            .await
        {
            Ok(v) => Ok(Some(v.labels)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn remove_volume(&self, name: &str) -> Result<(), DriverError> {
        let target = format!("volume {name}");
        match self
            .call(
                "remove",
                &target,
                API_TIMEOUT,
                self.docker.remove_volume(name, None::<RemoveVolumeOptions>),
            )
            .await
        {
            Ok(()) => {
                info!(volume = %name, "removed volume");
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Names of Canopy networks (of this scope).
    pub(super) async fn list_networks(&self) -> Result<Vec<String>, DriverError> {
        let options = ListNetworksOptions {
            filters: Some(names::filters(self.scope(), &[])),
        };
        let list = self
            .call(
                "list",
                "networks",
                API_TIMEOUT,
                self.docker.list_networks(Some(options)),
            )
            .await?;
        Ok(list
            .into_iter()
            .filter(|n| names::is_ours(n.labels.as_ref(), self.scope()))
            .filter_map(|n| n.name)
            .collect())
    }

    /// Names of Canopy networks of an earlier release (managed, no owner).
    pub(super) async fn list_legacy_networks(&self) -> Result<Vec<String>, DriverError> {
        let options = ListNetworksOptions {
            filters: Some(names::filters(None, &[])),
        };
        let list = self
            .call(
                "list",
                "networks",
                API_TIMEOUT,
                self.docker.list_networks(Some(options)),
            )
            .await?;
        Ok(list
            .into_iter()
            .filter(|n| names::is_legacy(n.labels.as_ref()))
            .filter_map(|n| n.name)
            .collect())
    }

    /// Removes a network; one that is already gone is fine.
    pub(super) async fn remove_network(&self, name: &str) -> Result<(), DriverError> {
        let target = format!("network {name}");
        match self
            .call(
                "remove",
                &target,
                API_TIMEOUT,
                self.docker.remove_network(name),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes a Canopy network (of this scope) that no container uses any more.
    pub(super) async fn remove_network_if_unused(&self, name: &str) -> Result<(), DriverError> {
        let target = format!("network {name}");
        let n = match self
            .call(
                "inspect",
                &target,
                API_TIMEOUT,
                self.docker
                    .inspect_network(name, None::<InspectNetworkOptions>),
            )
            .await
        {
            Ok(n) => n,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let in_use = n.containers.as_ref().is_some_and(|c| !c.is_empty());
        if in_use || !names::is_ours(n.labels.as_ref(), self.scope()) {
            return Ok(());
        }
        self.remove_network(name).await?;
        info!(network = %name, "removed network");
        Ok(())
    }

    /// Stops and removes Canopy containers, a few at a time; returns the first error. Helm
    /// pods' infra containers go last: the engine refuses to remove one while containers that
    /// joined its network namespace exist.
    pub(super) async fn remove_containers(
        &self,
        containers: Vec<ContainerSummary>,
    ) -> Result<(), DriverError> {
        let (infra, members): (Vec<_>, Vec<_>) = containers
            .into_iter()
            .partition(|c| label_is(c.labels.as_ref(), names::ROLE, "infra"));
        let first = self.remove_wave(members).await;
        let second = self.remove_wave(infra).await;
        first.and(second)
    }

    async fn remove_wave(&self, containers: Vec<ContainerSummary>) -> Result<(), DriverError> {
        let results: Vec<Result<(), DriverError>> = futures::stream::iter(containers)
            .filter(|c| futures::future::ready(names::is_ours(c.labels.as_ref(), self.scope())))
            .map(|c| async move {
                let name = summary_name(&c);
                info!(container = %name, "removing container that is no longer desired");
                self.stop_and_remove(&name).await
            })
            .buffer_unordered(REMOVE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Stops a container (SIGTERM, then SIGKILL after the stop timeout) and removes it; one that
    /// is already gone is fine.
    pub(super) async fn stop_and_remove(&self, name: &str) -> Result<(), DriverError> {
        let target = format!("container {name}");
        let grace = i32::try_from(self.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let stop = StopContainerOptions {
            t: Some(grace),
            ..Default::default()
        };
        match self
            .call(
                "stop",
                &target,
                API_TIMEOUT + self.stop_timeout,
                self.docker.stop_container(name, Some(stop)),
            )
            .await
        {
            // 304: not running; 404: already gone.
            Ok(()) => {}
            Err(e) if matches!(e.status_code(), Some(304 | 404)) => {}
            // Force-removal below kills it anyway.
            Err(e) => {
                debug!(container = %name, error = %e.chain(), "stop failed; removing by force")
            }
        }
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .call(
                "remove",
                &target,
                API_TIMEOUT,
                self.docker.remove_container(name, Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs one engine call with a timeout, naming what it does to which object on failure.
    pub(super) async fn call<T, F>(
        &self,
        op: &'static str,
        target: &str,
        timeout: Duration,
        fut: F,
    ) -> Result<T, DriverError>
    where
        F: Future<Output = Result<T, bollard::errors::Error>>,
    {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(DriverError::Engine {
                op,
                target: target.to_string(),
                source: Box::new(e),
            }),
            Err(_) => Err(DriverError::Timeout {
                op,
                target: target.to_string(),
                timeout,
            }),
        }
    }
}
