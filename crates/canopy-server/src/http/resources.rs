//! The resource manager's REST paths (`resource-manager.yaml`,
//! `/v1/projects/{projectName}/resource/...`): workloads and endpoints of an application on an
//! edge, VM start / stop / restart, the VNC address, pod delete. Thin: the app layer
//! (`app/resources.rs`) resolves, authorizes and acts.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Caller;
use super::catalog::Empty;
use super::error::ErrorBody;
use crate::app::{Access, App, AppEndpoint, AppError, AppWorkload, DeploymentWorkload, VmAction};

type ApiResult<T> = Result<T, AppError>;

/// `ListAppWorkloadsResponse`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAppWorkloadsResponse {
    pub app_workloads: Vec<AppWorkload>,
}

/// `ListAppEndpointsResponse`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListAppEndpointsResponse {
    pub app_endpoints: Vec<AppEndpoint>,
}

/// `{workloads, totalElements}`: Canopy's deployment-wide workload list.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListDeploymentWorkloadsResponse {
    pub workloads: Vec<DeploymentWorkload>,
    pub total_elements: u64,
}

/// `GetVNCResponse`: where to open the VM's console (a WebSocket carrying RFB).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct GetVncResponse {
    pub address: String,
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}",
    tag = "AppWorkloadService", operation_id = "AppWorkloadService_ListAppWorkloads",
    params(("projectName" = String, Path), ("appId" = String, Path, description = "App.id of a deployment's application"),
        ("clusterId" = String, Path, description = "edge name or id")),
    responses((status = 200, body = ListAppWorkloadsResponse), (status = 404, body = ErrorBody)))]
pub async fn list_app_workloads(
    State(app): State<App>,
    Path((project, app_id, cluster)): Path<(String, String, String)>,
    caller: Caller,
) -> ApiResult<Json<ListAppWorkloadsResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(ListAppWorkloadsResponse {
        app_workloads: app.list_app_workloads(&c, &app_id, &cluster)?,
    }))
}

#[utoipa::path(get, path = "/canopy/v1/projects/{projectName}/resource/workloads/deployments/{deplId}",
    tag = "Canopy",
    params(("projectName" = String, Path), ("deplId" = String, Path, description = "the deployment's id"),
        ("pageSize" = Option<u32>, Query, description = "workloads per page, at most 500 (0 or absent: 100)"),
        ("offset" = Option<u64>, Query, description = "index of the first workload")),
    responses((status = 200, body = ListDeploymentWorkloadsResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_deployment_workloads(
    State(app): State<App>,
    Path((project, deployment)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult<Json<ListDeploymentWorkloadsResponse>> {
    let (size, offset) = super::limits::page_params(q.as_deref().unwrap_or(""), 100)?;
    let c = caller.ctx(&app, &project).await?;
    let (workloads, total) = app.list_deployment_workloads(&c, &deployment, size, offset)?;
    Ok(Json(ListDeploymentWorkloadsResponse {
        workloads,
        total_elements: total as u64,
    }))
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/resource/endpoints/applications/{appId}/clusters/{clusterId}",
    tag = "EndpointsService", operation_id = "EndpointsService_ListAppEndpoints",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path)),
    responses((status = 200, body = ListAppEndpointsResponse), (status = 404, body = ErrorBody)))]
pub async fn list_app_endpoints(
    State(app): State<App>,
    Path((project, app_id, cluster)): Path<(String, String, String)>,
    caller: Caller,
) -> ApiResult<Json<ListAppEndpointsResponse>> {
    let c = caller.ctx(&app, &project).await?;
    Ok(Json(ListAppEndpointsResponse {
        app_endpoints: app.list_app_endpoints(&c, &app_id, &cluster)?,
    }))
}

async fn vm_action(
    app: App,
    caller: Caller,
    (project, app_id, cluster, vm): (String, String, String, String),
    action: VmAction,
) -> ApiResult<Json<Empty>> {
    let c = caller.ctx(&app, &project).await?;
    app.vm_action(&c, &app_id, &cluster, &vm, action).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(put, path = "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/start",
    tag = "VirtualMachineService", operation_id = "VirtualMachineService_StartVirtualMachine",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path), ("virtualMachineId" = String, Path)),
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn start_vm(
    State(app): State<App>,
    Path(p): Path<(String, String, String, String)>,
    caller: Caller,
) -> ApiResult<Json<Empty>> {
    vm_action(app, caller, p, VmAction::Start).await
}

#[utoipa::path(put, path = "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/stop",
    tag = "VirtualMachineService", operation_id = "VirtualMachineService_StopVirtualMachine",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path), ("virtualMachineId" = String, Path)),
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stop_vm(
    State(app): State<App>,
    Path(p): Path<(String, String, String, String)>,
    caller: Caller,
) -> ApiResult<Json<Empty>> {
    vm_action(app, caller, p, VmAction::Stop).await
}

#[utoipa::path(put, path = "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/restart",
    tag = "VirtualMachineService", operation_id = "VirtualMachineService_RestartVirtualMachine",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path), ("virtualMachineId" = String, Path)),
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn restart_vm(
    State(app): State<App>,
    Path(p): Path<(String, String, String, String)>,
    caller: Caller,
) -> ApiResult<Json<Empty>> {
    vm_action(app, caller, p, VmAction::Restart).await
}

#[utoipa::path(get, path = "/v1/projects/{projectName}/resource/workloads/applications/{appId}/clusters/{clusterId}/virtual-machines/{virtualMachineId}/vnc",
    tag = "VirtualMachineService", operation_id = "VirtualMachineService_GetVNC",
    params(("projectName" = String, Path), ("appId" = String, Path), ("clusterId" = String, Path), ("virtualMachineId" = String, Path)),
    responses((status = 200, body = GetVncResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_vnc(
    State(app): State<App>,
    Path((project, app_id, cluster, vm)): Path<(String, String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    caller: Caller,
) -> ApiResult<Json<GetVncResponse>> {
    let c = caller.ctx(&app, &project).await?;
    c.require(Access::FleetWrite)?;
    let found = app.resolve_vm(&c, &app_id, &cluster, &vm)?;
    if !app.vm_has_vnc(&c, &found) {
        return Err(AppError::FailedPrecondition(format!(
            "virtual machine {} has no VNC display (set `vnc: true` in its template)",
            found.name
        )));
    }
    // HTTP/2 carries the host in the URI's authority (`:authority`), HTTP/1.1 in `Host`.
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let base = websocket_base(app.public_url(), app.serves_tls(), host);
    Ok(Json(GetVncResponse {
        address: format!("{base}/vnc/{project}/{app_id}/{cluster}/{vm}"),
    }))
}

/// Where WebSockets of this server are reached: the configured public URL (behind a reverse
/// proxy) with `ws`/`wss` for `http`/`https`, else the host the request came to.
fn websocket_base(public_url: Option<&str>, tls: bool, request_host: &str) -> String {
    match public_url {
        Some(url) => match url.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => format!("ws://{url}"),
        },
        None => format!("{}://{request_host}", if tls { "wss" } else { "ws" }),
    }
}

#[cfg(test)]
mod tests {
    use super::websocket_base;

    #[test]
    fn websocket_addresses_follow_the_public_url() {
        assert_eq!(websocket_base(None, true, "h:7070"), "wss://h:7070");
        assert_eq!(websocket_base(None, false, "h:7070"), "ws://h:7070");
        // Behind a TLS-terminating proxy the server itself may serve plain HTTP.
        assert_eq!(
            websocket_base(
                Some("https://canopy.example.com/api"),
                false,
                "10.0.0.5:7070"
            ),
            "wss://canopy.example.com/api"
        );
        assert_eq!(
            websocket_base(Some("http://proxy:8080"), true, "h"),
            "ws://proxy:8080"
        );
    }
}

#[utoipa::path(put, path = "/v1/projects/{projectName}/resource/workloads/pods/clusters/{clusterId}/namespaces/{namespace}/pods/{podName}/delete",
    tag = "PodService", operation_id = "PodService_DeletePod",
    params(("projectName" = String, Path), ("clusterId" = String, Path), ("namespace" = String, Path), ("podName" = String, Path)),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody)))]
pub async fn delete_pod(
    State(app): State<App>,
    Path((project, cluster, namespace, pod)): Path<(String, String, String, String)>,
    caller: Caller,
) -> ApiResult<Json<Empty>> {
    let c = caller.ctx(&app, &project).await?;
    app.delete_pod(&c, &cluster, &namespace, &pod).await?;
    Ok(Json(Empty {}))
}
