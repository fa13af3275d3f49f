//! The resource manager (`/v1/projects/{project}/resource/...`) and Canopy's tunnels: what runs
//! for one application on one edge (pods and VMs, their endpoints), VM power actions, pod
//! deletes (recreate the containers), and the streams that reach a workload through the edge's
//! agent: VNC and serial consoles as WebSockets, logs as a streamed body.
//!
//! The resource manager is addressed by `App.id` (`b-...`, one app of one deployment) and edge,
//! which nobody types by hand, so [`Client::workloads_of_deployment`] and
//! [`Client::workloads_on_edge`] walk a deployment's (or an edge's) apps and return every
//! workload with where it runs; callers pick one by name from that list.
//!
//! Why WebSockets go through reqwest rather than tungstenite's own connector: the CLI pins the
//! server's certificate (or trusts a CA file), and reqwest is already configured for that. An
//! HTTP/1.1-only reqwest client with the same trust sends the upgrade request; the upgraded
//! connection is then wrapped as a WebSocket without a second handshake.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::{Client, ClientError, ListParams, decode_err, take_list};

pub use reqwest::Upgraded;
pub use tokio_tungstenite::tungstenite::Message as WebSocketMessage;

/// A WebSocket to the server (binary messages carry the console's bytes both ways).
pub type WebSocket = WebSocketStream<Upgraded>;

/// A streamed log: chunks of text as the edge sends them.
pub type LogStream = BoxStream<'static, Result<Bytes, ClientError>>;

/// How many apps are asked about at once when walking a deployment.
const CONCURRENCY: usize = 8;

/// `AppWorkload`: one VM, or one pod (an app's containers on one edge).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppWorkload {
    /// `TYPE_POD` or `TYPE_VIRTUAL_MACHINE`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable id (the VM id of the power actions and consoles).
    pub id: String,
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub workload_ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<VirtualMachine>,
}

/// `TYPE_POD`.
pub const TYPE_POD: &str = "TYPE_POD";
/// `TYPE_VIRTUAL_MACHINE`.
pub const TYPE_VIRTUAL_MACHINE: &str = "TYPE_VIRTUAL_MACHINE";

impl AppWorkload {
    /// True for a virtual machine.
    pub fn is_vm(&self) -> bool {
        self.kind == TYPE_VIRTUAL_MACHINE
    }

    /// True for a pod (an app's containers).
    pub fn is_pod(&self) -> bool {
        self.kind == TYPE_POD
    }

    /// The workload's state without the `STATE_` prefix (`RUNNING`, `PENDING`, `STOPPED`...).
    pub fn state(&self) -> &str {
        let s = match (&self.pod, &self.virtual_machine) {
            (_, Some(vm)) => vm.status.state.as_str(),
            (Some(pod), None) => pod.status.state.as_str(),
            (None, None) => "",
        };
        s.strip_prefix("STATE_").unwrap_or(s)
    }

    /// Restarts: of the VM, or summed over the pod's containers.
    pub fn restarts(&self) -> u32 {
        match (&self.pod, &self.virtual_machine) {
            (_, Some(vm)) => vm.restart_count,
            (Some(pod), None) => pod.containers.iter().map(|c| c.restart_count).sum(),
            (None, None) => 0,
        }
    }
}

/// A pod: the containers of one app on one edge.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    pub containers: Vec<Container>,
    /// `STATE_RUNNING`, `STATE_PENDING`, `STATE_SUCCEEDED`, `STATE_FAILED`.
    pub status: StateOnly,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image_name: String,
    pub restart_count: u32,
    pub status: ContainerStatus,
    /// An init container of a Helm app's pod (Canopy extension).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init_container: bool,
}

/// One of the three is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_running: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_waiting: Option<ContainerStateWaiting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_terminated: Option<ContainerStateTerminated>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStateWaiting {
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStateTerminated {
    pub exit_code: i64,
    pub reason: String,
    pub message: String,
}

/// A virtual machine's state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachine {
    /// What the operator asked for: `STATE_UP` (started) or `STATE_DOWN` (stopped).
    pub admin_status: StateOnly,
    pub status: VirtualMachineStatus,
    /// The accelerator QEMU uses (`kvm`, `tcg`), once reported.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub accelerator: String,
    /// Whether a VNC console can be opened.
    pub vnc: bool,
    pub restart_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineStatus {
    /// `STATE_RUNNING`, `STATE_STOPPED`, `STATE_PROVISIONING`, `STATE_ERROR_...`.
    pub state: String,
    /// Why the VM is not running, when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `{state}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StateOnly {
    pub state: String,
}

/// `AppEndpoint`: the published ports of one workload (named like it) and where they are
/// reached.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppEndpoint {
    pub id: String,
    /// The container's or VM's name.
    pub name: String,
    pub fqdns: Vec<Fqdn>,
    pub ports: Vec<EndpointPort>,
    /// `STATE_READY` or `STATE_NOT_READY`.
    pub endpoint_status: StateOnly,
}

impl AppEndpoint {
    /// Every `host:port` of the endpoint (hosts in order, then ports).
    pub fn addresses(&self) -> Vec<String> {
        self.fqdns
            .iter()
            .flat_map(|f| {
                self.ports.iter().map(move |p| {
                    if f.fqdn.contains(':') {
                        format!("[{}]:{}", f.fqdn, p.value)
                    } else {
                        format!("{}:{}", f.fqdn, p.value)
                    }
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Fqdn {
    pub fqdn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    pub name: String,
    pub value: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub service_proxy_url: String,
}

/// A workload with where it runs: what [`Client::workloads_of_deployment`] returns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EdgeWorkload {
    pub edge_id: String,
    pub edge_name: String,
    pub deployment_id: String,
    /// The deployment's display name, else its name.
    pub deployment_name: String,
    /// The application's name in the package.
    pub app: String,
    /// `App.id` of the application in the deployment (`b-...`).
    pub app_id: String,
    pub workload: AppWorkload,
    /// The endpoints of this workload (of its containers, for a pod).
    pub endpoints: Vec<AppEndpoint>,
}

impl EdgeWorkload {
    /// Every `host:port` the workload is reached at.
    pub fn addresses(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .flat_map(AppEndpoint::addresses)
            .collect()
    }
}

/// A VM power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Start,
    Stop,
    /// Restarts a running VM; starts a stopped one.
    Restart,
}

impl VmAction {
    /// The path segment and verb: `start`, `stop`, `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Stop => "stop",
            VmAction::Restart => "restart",
        }
    }
}

/// What part of a log to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Lines of the past to send first (server default 100, at most 10000).
    pub tail: Option<u32>,
    /// Keep streaming new lines until the caller drops the stream.
    pub follow: bool,
}

/// One workload of Canopy's deployment-wide list
/// (`GET /canopy/v1/projects/{p}/resource/workloads/deployments/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentWorkload {
    pub cluster_id: String,
    pub cluster_name: String,
    pub app_name: String,
    pub app_id: String,
    pub workload: AppWorkload,
    #[serde(default)]
    pub endpoints: Vec<AppEndpoint>,
}

/// One app of one deployment on one edge, to ask the resource manager about.
struct AppOnEdge {
    edge_id: String,
    edge_name: String,
    deployment_id: String,
    deployment_name: String,
    app: String,
    app_id: String,
}

impl Client {
    /// The URL of `segments` under `/v1/projects/{project}/resource`.
    fn resource_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["resource"];
        all.extend_from_slice(segments);
        self.deploy_url(&all)
    }

    /// The URL of `segments` under `/canopy/v1/projects/{project}/resource`.
    fn canopy_resource_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["resource"];
        all.extend_from_slice(segments);
        self.canopy_url(&all)
    }

    /// `GET /resource/workloads/applications/{appId}/clusters/{edge}`: the app's pod (when it
    /// has containers) and its VMs on the edge (name or id).
    pub async fn list_app_workloads(
        &self,
        app_id: &str,
        edge: &str,
    ) -> Result<Vec<AppWorkload>, ClientError> {
        let url = self.resource_url(&["workloads", "applications", app_id, "clusters", edge]);
        let mut body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take_list(&url, &mut body, &["appWorkloads"])
    }

    /// `GET /resource/endpoints/applications/{appId}/clusters/{edge}`: the app's published
    /// ports and the edge's addresses.
    pub async fn list_app_endpoints(
        &self,
        app_id: &str,
        edge: &str,
    ) -> Result<Vec<AppEndpoint>, ClientError> {
        let url = self.resource_url(&["endpoints", "applications", app_id, "clusters", edge]);
        let mut body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        take_list(&url, &mut body, &["appEndpoints"])
    }

    /// `PUT .../virtual-machines/{vmId}/{start|stop|restart}`: recorded by the server and
    /// carried to the edge with its desired state (applied when the edge is next in touch).
    pub async fn vm_action(
        &self,
        app_id: &str,
        edge: &str,
        vm_id: &str,
        action: VmAction,
    ) -> Result<(), ClientError> {
        let url = self.resource_url(&[
            "workloads",
            "applications",
            app_id,
            "clusters",
            edge,
            "virtual-machines",
            vm_id,
            action.as_str(),
        ]);
        self.execute(self.request(Method::PUT, &url), self.timeout)
            .await?;
        Ok(())
    }

    /// `GET .../virtual-machines/{vmId}/vnc`: the WebSocket address of the VM's VNC display
    /// (`wss://host/vnc/...`; open it with [`Client::open_websocket`]).
    pub async fn vm_vnc_address(
        &self,
        app_id: &str,
        edge: &str,
        vm_id: &str,
    ) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Vnc {
            address: String,
        }
        let url = self.resource_url(&[
            "workloads",
            "applications",
            app_id,
            "clusters",
            edge,
            "virtual-machines",
            vm_id,
            "vnc",
        ]);
        let body = self
            .execute_json(self.request(Method::GET, &url), &url)
            .await?;
        let vnc: Vnc = serde_json::from_value(body).map_err(|e| decode_err(&url, e))?;
        Ok(vnc.address)
    }

    /// Opens the VM's VNC display: RFB bytes in binary messages, both ways.
    pub async fn open_vnc(
        &self,
        app_id: &str,
        edge: &str,
        vm_id: &str,
    ) -> Result<WebSocket, ClientError> {
        let address = self.vm_vnc_address(app_id, edge, vm_id).await?;
        self.open_websocket(&address).await
    }

    /// Opens the VM's serial console (`/canopy/v1/.../virtual-machines/{vmId}/serial`): bytes
    /// both ways in binary messages; what the guest printed before is not replayed.
    pub async fn open_vm_serial(
        &self,
        app_id: &str,
        edge: &str,
        vm_id: &str,
    ) -> Result<WebSocket, ClientError> {
        let url = self.canopy_resource_url(&[
            "workloads",
            "applications",
            app_id,
            "clusters",
            edge,
            "virtual-machines",
            vm_id,
            "serial",
        ]);
        self.open_websocket(url.as_str()).await
    }

    /// `PUT /resource/workloads/pods/clusters/{edge}/namespaces/{ns}/pods/{pod}/delete`: the
    /// app's containers on that edge are recreated.
    pub async fn delete_pod(
        &self,
        edge: &str,
        namespace: &str,
        pod: &str,
    ) -> Result<(), ClientError> {
        let url = self.resource_url(&[
            "workloads",
            "pods",
            "clusters",
            edge,
            "namespaces",
            namespace,
            "pods",
            pod,
            "delete",
        ]);
        self.execute(self.request(Method::PUT, &url), self.timeout)
            .await?;
        Ok(())
    }

    /// A VM's log (its serial output as the edge keeps it), streamed.
    pub async fn vm_logs(
        &self,
        app_id: &str,
        edge: &str,
        vm_id: &str,
        options: LogOptions,
    ) -> Result<LogStream, ClientError> {
        let url = self.canopy_resource_url(&[
            "workloads",
            "applications",
            app_id,
            "clusters",
            edge,
            "virtual-machines",
            vm_id,
            "logs",
        ]);
        self.stream_logs(url, options).await
    }

    /// A container's log (stdout and stderr), streamed.
    pub async fn container_logs(
        &self,
        app_id: &str,
        edge: &str,
        container: &str,
        options: LogOptions,
    ) -> Result<LogStream, ClientError> {
        let url = self.canopy_resource_url(&[
            "workloads",
            "applications",
            app_id,
            "clusters",
            edge,
            "containers",
            container,
            "logs",
        ]);
        self.stream_logs(url, options).await
    }

    /// Sends a logs request: the answer's headers must come within the timeout (the server
    /// answers once the edge opened the stream); the body then streams for as long as it lasts.
    async fn stream_logs(&self, url: Url, options: LogOptions) -> Result<LogStream, ClientError> {
        let mut query = vec![("follow", options.follow.to_string())];
        if let Some(tail) = options.tail {
            query.push(("tail", tail.to_string()));
        }
        let req = self.request(Method::GET, &url).query(&query);
        let resp = self.send_within(req, self.timeout).await?;
        let base = self.base_url().to_owned();
        let timeout = self.timeout;
        Ok(resp
            .bytes_stream()
            .map_err(move |e| ClientError::from_transport(&base, timeout, e))
            .boxed())
    }

    /// Sends a request whose answer may stream for long: only the wait for the headers is
    /// bounded by `timeout`. An error status becomes [`ClientError::Api`].
    async fn send_within(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let sent = tokio::time::timeout(timeout, crate::send_patiently(req)).await;
        let resp = match sent {
            Err(_) => {
                return Err(ClientError::Timeout {
                    url: self.base_url().to_owned(),
                    after: timeout,
                });
            }
            Ok(r) => r.map_err(|e| ClientError::from_transport(self.base_url(), timeout, e))?,
        };
        let status = resp.status();
        if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let body = tokio::time::timeout(timeout, resp.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(ClientError::from_response(status, &body))
    }

    /// Opens the WebSocket at `url` (`ws://`, `wss://`, or the same as `http(s)://`) on this
    /// client's server, with its token and TLS trust. Refused for another host or port: the
    /// token is only ever sent to the server this client was made for.
    pub async fn open_websocket(&self, url: &str) -> Result<WebSocket, ClientError> {
        let target = self.websocket_http_url(url)?;
        let http = self.upgrade_client()?;
        let key = generate_key();
        let mut req = http
            .get(target.clone())
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, "websocket")
            .header(reqwest::header::SEC_WEBSOCKET_VERSION, "13")
            .header(reqwest::header::SEC_WEBSOCKET_KEY, &key);
        if let Some(t) = &self.token {
            req = req.bearer_auth(&t.0);
        }
        let resp = self.send_within(req, self.timeout).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::InvalidRequest(format!(
                "{target} answered {} instead of opening a WebSocket",
                resp.status()
            )));
        }
        let accept = resp
            .headers()
            .get(reqwest::header::SEC_WEBSOCKET_ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept != derive_accept_key(key.as_bytes()) {
            return Err(ClientError::InvalidRequest(format!(
                "{target} opened a connection that is not the WebSocket asked for (wrong \
                 Sec-WebSocket-Accept)"
            )));
        }
        let upgraded = resp.upgrade().await.map_err(|e| ClientError::Transport {
            url: self.base_url().to_owned(),
            cause: e.to_string(),
        })?;
        Ok(WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await)
    }

    /// `url` as the `http(s)://` URL to send the upgrade to, checked to be on this server.
    fn websocket_http_url(&self, url: &str) -> Result<Url, ClientError> {
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let mut parsed = Url::parse(url.trim()).map_err(|e| invalid(e.to_string()))?;
        let scheme = match parsed.scheme() {
            "ws" | "http" => "http",
            "wss" | "https" => "https",
            other => return Err(invalid(format!("{other}:// is not a WebSocket URL"))),
        };
        parsed
            .set_scheme(scheme)
            .map_err(|()| invalid("cannot be made an HTTP URL".into()))?;
        let same = parsed.scheme() == self.base.scheme()
            && parsed.host_str() == self.base.host_str()
            && parsed.port_or_known_default() == self.base.port_or_known_default();
        if !same {
            return Err(invalid(format!(
                "not on the server this client talks to ({})",
                self.base_url()
            )));
        }
        Ok(parsed)
    }

    /// An HTTP/1.1-only client with this client's trust (upgrades exist only in HTTP/1.1),
    /// built on first use.
    fn upgrade_client(&self) -> Result<reqwest::Client, ClientError> {
        if let Some(c) = self.upgrade_http.get() {
            return Ok(c.clone());
        }
        let mut builder = crate::http_builder().http1_only();
        if let Some(mut tls) = canopy_tls::client_config(&self.trust)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?
        {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            builder = builder.use_preconfigured_tls(tls);
        }
        let built = builder.build().map_err(|e| ClientError::InvalidUrl {
            url: self.base_url().to_owned(),
            reason: e.to_string(),
        })?;
        Ok(self.upgrade_http.get_or_init(|| built).clone())
    }

    // ---- walking deployments ----------------------------------------------------------------

    /// One page of the workloads of deployment `id` on every edge, with their endpoints, in
    /// edge-name then app order (Canopy's deployment-wide list: one call per page instead of
    /// two per app and edge).
    pub async fn deployment_workloads_page(
        &self,
        id: &str,
        params: &ListParams,
    ) -> Result<crate::Page<DeploymentWorkload>, ClientError> {
        let url = self.canopy_resource_url(&["workloads", "deployments", id]);
        self.get_page(&url, "workloads", params).await
    }

    /// Every workload of deployment `id` on every edge it targets, with the endpoints of each,
    /// in edge then app order.
    pub async fn workloads_of_deployment(
        &self,
        id: &str,
    ) -> Result<Vec<EdgeWorkload>, ClientError> {
        let d = self.get_deployment(id).await?;
        let name = if d.display_name.is_empty() {
            d.name.clone()
        } else {
            d.display_name.clone()
        };
        let all = crate::collect_all(&ListParams::default(), async |p: &ListParams| {
            self.deployment_workloads_page(&d.deploy_id, p).await
        })
        .await?;
        Ok(all
            .into_iter()
            .map(|w| EdgeWorkload {
                edge_id: w.cluster_id,
                edge_name: w.cluster_name,
                deployment_id: d.deploy_id.clone(),
                deployment_name: name.clone(),
                app: w.app_name,
                app_id: w.app_id,
                workload: w.workload,
                endpoints: w.endpoints,
            })
            .collect())
    }

    /// Every workload of every deployment on `edge` (name or id).
    pub async fn workloads_on_edge(&self, edge: &str) -> Result<Vec<EdgeWorkload>, ClientError> {
        let e = self.get_edge(edge).await?;
        let deployments = crate::collect_all(&ListParams::default(), async |p: &ListParams| {
            self.deployments_on_cluster(&e.id, p).await
        })
        .await?;
        let apps = deployments
            .iter()
            .flat_map(|d| {
                let name = if d.deployment_display_name.is_empty() {
                    d.deployment_name.clone()
                } else {
                    d.deployment_display_name.clone()
                };
                let e = &e;
                d.apps.iter().map(move |a| AppOnEdge {
                    edge_id: e.id.clone(),
                    edge_name: e.name.clone(),
                    deployment_id: d.deployment_uid.clone(),
                    deployment_name: name.clone(),
                    app: a.name.clone(),
                    app_id: a.id.clone(),
                })
            })
            .collect();
        self.workloads_of(apps).await
    }

    /// Workloads and endpoints of each app, a few apps at a time, in order.
    async fn workloads_of(&self, apps: Vec<AppOnEdge>) -> Result<Vec<EdgeWorkload>, ClientError> {
        let per_app = futures::stream::iter(apps)
            .map(|a| async move {
                let found = futures::try_join!(
                    self.list_app_workloads(&a.app_id, &a.edge_id),
                    self.list_app_endpoints(&a.app_id, &a.edge_id)
                );
                match found {
                    Ok((workloads, endpoints)) => Ok(join(&a, workloads, &endpoints)),
                    // The app left the edge between the two calls.
                    Err(e) if e.is_not_found() => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            })
            .buffered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(per_app.into_iter().flatten().collect())
    }
}

/// The workloads of one app with their endpoints (a VM's endpoint is named like the VM, a
/// pod's like its containers).
fn join(
    a: &AppOnEdge,
    workloads: Vec<AppWorkload>,
    endpoints: &[AppEndpoint],
) -> Vec<EdgeWorkload> {
    workloads
        .into_iter()
        .map(|w| {
            let names: Vec<&str> = match (&w.pod, w.is_vm()) {
                (_, true) => vec![w.name.as_str()],
                (Some(pod), false) => pod.containers.iter().map(|c| c.name.as_str()).collect(),
                (None, false) => Vec::new(),
            };
            let endpoints = endpoints
                .iter()
                .filter(|e| names.contains(&e.name.as_str()))
                .cloned()
                .collect();
            EdgeWorkload {
                edge_id: a.edge_id.clone(),
                edge_name: a.edge_name.clone(),
                deployment_id: a.deployment_id.clone(),
                deployment_name: a.deployment_name.clone(),
                app: a.app.clone(),
                app_id: a.app_id.clone(),
                workload: w,
                endpoints,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_reference_shapes_and_ignores_unknown_fields() {
        let body = serde_json::json!({
            "type": "TYPE_VIRTUAL_MACHINE", "id": "u1", "name": "tiny", "namespace": "demo",
            "workloadReady": false, "future": 1,
            "virtualMachine": {"adminStatus": {"state": "STATE_DOWN"},
                "status": {"state": "STATE_STOPPED"}, "vnc": true, "restartCount": 2}
        });
        let w: AppWorkload = serde_json::from_value(body).unwrap();
        assert!(w.is_vm() && !w.is_pod());
        assert_eq!((w.state(), w.restarts()), ("STOPPED", 2));
        let pod: AppWorkload = serde_json::from_value(serde_json::json!({
            "type": "TYPE_POD", "id": "u2", "name": "web-1", "namespace": "demo",
            "workloadReady": true,
            "pod": {"status": {"state": "STATE_RUNNING"}, "containers": [
                {"name": "a", "imageName": "x", "restartCount": 1, "status": {"containerStateRunning": {}}},
                {"name": "b", "imageName": "y", "restartCount": 2,
                 "status": {"containerStateWaiting": {"reason": "CrashLoopBackOff", "message": ""}}}]}
        }))
        .unwrap();
        assert_eq!((pod.state(), pod.restarts()), ("RUNNING", 3));
    }

    #[test]
    fn endpoints_list_every_host_and_port() {
        let e = AppEndpoint {
            fqdns: vec![
                Fqdn {
                    fqdn: "edge-1".into(),
                },
                Fqdn { fqdn: "::1".into() },
            ],
            ports: vec![EndpointPort {
                value: 80,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(e.addresses(), ["edge-1:80", "[::1]:80"]);
    }

    #[test]
    fn websockets_only_go_to_the_same_server() {
        let c = Client::new("https://h.example.com", "p").unwrap();
        let u = c
            .websocket_http_url("wss://h.example.com:443/vnc/p/a/e/v")
            .unwrap();
        assert_eq!(u.as_str(), "https://h.example.com/vnc/p/a/e/v");
        for bad in [
            "ws://h.example.com/vnc",
            "wss://other.example.com/vnc",
            "wss://h.example.com:8443/vnc",
            "ftp://h.example.com/",
        ] {
            assert!(c.websocket_http_url(bad).is_err(), "{bad}");
        }
    }

    /// A server with a WebSocket echo at `/ws` (which answers its first message with the
    /// `Authorization` it was opened with), a VNC address pointing at it, and a log body
    /// streamed in three chunks.
    async fn server() -> String {
        use axum::extract::ws::{Message, WebSocketUpgrade};
        use axum::http::HeaderMap;
        use axum::routing::{get, put};
        async fn ws(h: HeaderMap, up: WebSocketUpgrade) -> axum::response::Response {
            let auth = h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            up.on_upgrade(|mut s| async move {
                let _ = s.send(Message::Text(auth.into())).await;
                while let Some(Ok(m)) = s.recv().await {
                    if matches!(m, Message::Close(_)) || s.send(m).await.is_err() {
                        break;
                    }
                }
            })
        }
        let vnc = |h: HeaderMap| async move {
            let host = h["host"].to_str().unwrap().to_owned();
            axum::Json(serde_json::json!({"address": format!("ws://{host}/ws")}))
        };
        let logs = |q: axum::extract::RawQuery| async move {
            let q = q.0.unwrap_or_default();
            let chunks = vec![
                Ok::<_, std::io::Error>(Bytes::from(format!("query {q}\n"))),
                Ok(Bytes::from_static(b"line 1\n")),
                Ok(Bytes::from_static(b"line 2\n")),
            ];
            axum::body::Body::from_stream(futures::stream::iter(chunks))
        };
        let refuse = || async {
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(
                    serde_json::json!({"code": 5, "message": "virtual machine x not found"}),
                ),
            )
        };
        let base = "/v1/projects/p/resource/workloads/applications/b-1/clusters/e1";
        let app = axum::Router::new()
            .route("/ws", get(ws))
            .route(&format!("{base}/virtual-machines/v1/vnc"), get(vnc))
            .route(&format!("{base}/virtual-machines/v1/stop"), put(|| async { "{}" }))
            .route(&format!("{base}/virtual-machines/x/start"), put(refuse))
            .route(
                "/canopy/v1/projects/p/resource/workloads/applications/b-1/clusters/e1/containers/web/logs",
                get(logs),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn websockets_carry_the_token_and_bytes_both_ways() {
        use futures::SinkExt;
        let url = server().await;
        let c = Client::new(&url, "p").unwrap().with_token("tok-1");
        let mut ws = c.open_vnc("b-1", "e1", "v1").await.unwrap();
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first.into_text().unwrap().as_str(), "Bearer tok-1");
        ws.send(WebSocketMessage::Binary(Bytes::from_static(
            b"RFB 003.008\n",
        )))
        .await
        .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_data().as_ref(), b"RFB 003.008\n");
        // Another host never gets the token.
        let e = c
            .open_websocket("ws://192.0.2.1:1/ws")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not on the server"), "{e}");
    }

    #[tokio::test]
    async fn actions_logs_and_errors() {
        let url = server().await;
        let c = Client::new(&url, "p").unwrap();
        c.vm_action("b-1", "e1", "v1", VmAction::Stop)
            .await
            .unwrap();
        let e = c
            .vm_action("b-1", "e1", "x", VmAction::Start)
            .await
            .unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "virtual machine x not found");
        let opts = LogOptions {
            tail: Some(5),
            follow: true,
        };
        let stream = c.container_logs("b-1", "e1", "web", opts).await.unwrap();
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        let text: Vec<u8> = chunks.concat();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "query follow=true&tail=5\nline 1\nline 2\n"
        );
        // Not a WebSocket: the server's answer is the error.
        let e = c
            .open_websocket(&format!("{url}/nothing"))
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
    }
}
