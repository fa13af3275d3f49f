//! The resource manager API (`resource-manager.yaml`) over HTTP with a **simulated agent**
//! (`canopy_testkit::sim_agent`): workloads and endpoints built from agent reports, VM power
//! actions and pod deletes carried to the edge as workload controls, authorization and bad
//! input. `crates/canopy/tests/edge_vm.rs` runs the same against a real agent, Podman and QEMU.

use std::time::Duration;

use canopy_proto::{
    Accelerator, AgentInfo, AppState, AppStatus, PortSpec, StatusKind, StatusReport,
    WorkloadControl, WorkloadKind, WorkloadStatus,
};
use canopy_server::hub::HubConfig;
use canopy_testkit::sim_agent::SimAgent;
use canopy_testkit::{TestControlPlane, example};
use reqwest::StatusCode;
use serde_json::{Value, json};

const P: &str = "default";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn fast() -> HubConfig {
    HubConfig {
        heartbeat: Duration::from_secs(1),
        edge_timeout: Duration::from_secs(30),
        no_target_grace: Duration::from_secs(3),
    }
}

/// The control plane with edge-demo uploaded, one simulated edge enrolled, and edge-demo
/// deployed to it: (control plane, agent, deployment id).
async fn deployed() -> (TestControlPlane, SimAgent, String) {
    let cp = TestControlPlane::start_fleet(fast()).await;
    let (s, b) = cp.upload_dir(P, &example("edge-demo")).await;
    assert_eq!(s, StatusCode::OK, "upload edge-demo: {b}");
    let (s, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let mut agent =
        SimAgent::enroll(&cp, t["secret"].as_str().unwrap(), "e1", &[("site", "a")]).await;
    let (s, d) = cp
        .post(
            &cp.at(&format!("/v1/projects/{P}/appdeployment/deployments")),
            &json!({"appName": "edge-demo", "appVersion": "1.0.0", "displayName": "demo",
                    "allAppTargetClusters": {"labels": {"site": "a"}},
                    "overrideValues": [{"appName": "vm", "values": {
                        "kernelUrl": "https://images.example.com/vmlinuz", "kernelSha256": SHA,
                        "initrdUrl": "https://images.example.com/initrd", "initrdSha256": SHA}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy: {d}");
    let id = d["deploymentId"].as_str().unwrap().to_string();
    agent
        .poll(5)
        .await
        .expect("the edge receives the deployment");
    (cp, agent, id)
}

/// `App.id` of `app` in deployment `id`, from the deployment's clusters.
async fn app_id(cp: &TestControlPlane, id: &str, app: &str) -> String {
    let (s, b) = cp
        .get(&cp.at(&format!(
            "/v1/projects/{P}/appdeployment/deployments/{id}/clusters"
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["clusters"][0]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == app)
        .unwrap_or_else(|| panic!("app {app} in {b}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn res(cp: &TestControlPlane, rest: &str) -> String {
    cp.at(&format!("/v1/projects/{P}/resource{rest}"))
}

async fn workloads(cp: &TestControlPlane, app_id: &str) -> Vec<Value> {
    let (s, b) = cp
        .get(&res(
            cp,
            &format!("/workloads/applications/{app_id}/clusters/e1"),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["appWorkloads"].as_array().unwrap().clone()
}

/// The control the edge holds for (app, kind), once its desired state has it.
async fn control(agent: &mut SimAgent, app: &str, kind: WorkloadKind) -> Option<WorkloadControl> {
    agent.poll(5).await;
    agent
        .held
        .controls
        .iter()
        .find(|c| c.app == app && c.kind == kind)
        .cloned()
}

fn running_report(agent: &mut SimAgent, vm_state: &str) -> StatusReport {
    let mut apps = Vec::new();
    for d in &agent.held.deployments {
        for a in &d.apps {
            let mut workloads: Vec<WorkloadStatus> = a
                .containers
                .iter()
                .map(|c| WorkloadStatus {
                    kind: StatusKind::Container,
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: "running".into(),
                    restarts: 1,
                    created_at: "2026-11-28T10:00:00Z".into(),
                    ports: c.ports.clone(),
                    ..Default::default()
                })
                .collect();
            workloads.extend(a.vms.iter().map(|v| {
                WorkloadStatus {
                    kind: StatusKind::Vm,
                    name: v.name.clone(),
                    state: vm_state.into(),
                    accelerator: Some(Accelerator::Tcg),
                    message: if vm_state == "ERROR_IMAGE_PULL" {
                        "sha256 mismatch".into()
                    } else {
                        String::new()
                    },
                    ports: v
                        .ports
                        .iter()
                        .map(|p| PortSpec {
                            container_port: p.guest_port,
                            host_port: Some(p.host_port),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            }));
            apps.push(AppStatus {
                deployment_id: d.deployment_id.clone(),
                app: a.name.clone(),
                state: AppState::Running,
                message: String::new(),
                deployment_generation: d.generation,
                workloads,
            });
        }
    }
    agent.seq += 1;
    StatusReport {
        protocol_version: 1,
        seq: agent.seq,
        generation: agent.held.generation,
        apps,
        agent: Some(AgentInfo {
            version: "test".into(),
            hostname: "edge-1.example.com".into(),
            addresses: vec!["192.0.2.10".into()],
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn workloads_and_endpoints_follow_the_agent_reports() {
    let (cp, mut agent, id) = deployed().await;
    let web = app_id(&cp, &id, "edge-web").await;
    let vm = app_id(&cp, &id, "vm").await;

    // Before any report: what should run, not running yet.
    let w = workloads(&cp, &web).await;
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["type"], "TYPE_POD");
    assert_eq!(w[0]["namespace"], "edge-demo");
    assert_eq!(w[0]["pod"]["status"]["state"], "STATE_PENDING");
    assert_eq!(
        w[0]["pod"]["containers"][0]["status"]["containerStateWaiting"]["reason"],
        "ContainerCreating"
    );
    let v = workloads(&cp, &vm).await;
    assert_eq!(v.len(), 1, "a VM-only app has no pod: {v:?}");
    assert_eq!(v[0]["type"], "TYPE_VIRTUAL_MACHINE");
    assert_eq!(v[0]["name"], "tiny");
    assert_eq!(
        v[0]["virtualMachine"]["status"]["state"],
        "STATE_PROVISIONING"
    );
    assert_eq!(v[0]["virtualMachine"]["adminStatus"]["state"], "STATE_UP");
    assert_eq!(v[0]["workloadReady"], false);

    let report = running_report(&mut agent, "RUNNING");
    let (s, b) = agent.send(&report).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let w = workloads(&cp, &web).await;
    assert_eq!(w[0]["pod"]["status"]["state"], "STATE_RUNNING", "{w:?}");
    assert_eq!(w[0]["workloadReady"], true);
    assert_eq!(w[0]["createTime"], "2026-11-28T10:00:00Z");
    let c = &w[0]["pod"]["containers"][0];
    assert_eq!(c["name"], "httpd");
    assert_eq!(c["restartCount"], 1);
    assert!(c["status"]["containerStateRunning"].is_object(), "{c}");
    let v = workloads(&cp, &vm).await;
    assert_eq!(v[0]["virtualMachine"]["status"]["state"], "STATE_RUNNING");
    assert_eq!(v[0]["virtualMachine"]["accelerator"], "tcg");
    assert_eq!(v[0]["workloadReady"], true);
    let vm_id = v[0]["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(vm_id).is_ok(), "{vm_id}");
    assert_eq!(workloads(&cp, &vm).await[0]["id"], vm_id, "ids are stable");

    // Endpoints: the edge's name and addresses with the published ports.
    for (app, port) in [(&web, 18088), (&vm, 18090)] {
        let (s, b) = cp
            .get(&res(
                &cp,
                &format!("/endpoints/applications/{app}/clusters/e1"),
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let e = &b["appEndpoints"][0];
        assert_eq!(e["endpointStatus"]["state"], "STATE_READY", "{b}");
        assert_eq!(e["ports"][0]["value"], port, "{b}");
        assert_eq!(e["ports"][0]["protocol"], "TCP");
        let fqdns: Vec<&str> = e["fqdns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fqdn"].as_str().unwrap())
            .collect();
        assert_eq!(fqdns, ["edge-1.example.com", "192.0.2.10"]);
    }

    // Canopy's deployment-wide list: the same workloads and endpoints, every edge, paged.
    let (s, t) = cp
        .post(
            &cp.at(&format!("/canopy/v1/projects/{P}/enrollment-tokens")),
            &json!({"description": "second edge"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let _e0 = SimAgent::enroll(&cp, t["secret"].as_str().unwrap(), "e0", &[("site", "a")]).await;
    let page = |size: usize, offset: usize| {
        let cp = &cp;
        let id = &id;
        async move {
            let (s, b) = cp
                .get(&cp.at(&format!(
                    "/canopy/v1/projects/{P}/resource/workloads/deployments/{id}?pageSize={size}&offset={offset}"
                )))
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(b["totalElements"], 4, "two apps on two edges: {b}");
            b["workloads"].as_array().unwrap().clone()
        }
    };
    let all = page(10, 0).await;
    let seen: Vec<(&str, &str)> = all
        .iter()
        .map(|w| {
            (
                w["clusterName"].as_str().unwrap(),
                w["appName"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("e0", "edge-web"),
            ("e0", "vm"),
            ("e1", "edge-web"),
            ("e1", "vm")
        ]
    );
    assert_eq!(
        all[0]["workload"]["pod"]["status"]["state"],
        "STATE_PENDING"
    );
    assert_eq!(all[2]["appId"], web.as_str());
    assert_eq!(all[3]["appId"], vm.as_str());
    assert_eq!(all[2]["workload"], workloads(&cp, &web).await[0]);
    assert_eq!(all[3]["workload"], workloads(&cp, &vm).await[0]);
    let (_, web_endpoints) = cp
        .get(&res(
            &cp,
            &format!("/endpoints/applications/{web}/clusters/e1"),
        ))
        .await;
    assert_eq!(all[2]["endpoints"], web_endpoints["appEndpoints"]);
    assert_eq!(all[3]["endpoints"][0]["name"], "tiny");
    assert_eq!(page(2, 1).await, all[1..3].to_vec());
    assert_eq!(page(3, 3).await, all[3..].to_vec());
    assert!(page(3, 9).await.is_empty());
    // An edge leaving the deployment leaves the list (the server keeps the walk between calls).
    let r = cp
        .http()
        .patch(cp.at(&format!("/canopy/v1/projects/{P}/edges/e0/labels")))
        .bearer_auth(cp.admin_token())
        .json(&json!({"set": {"site": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, b) = cp
        .get(&cp.at(&format!(
            "/canopy/v1/projects/{P}/resource/workloads/deployments/{id}"
        )))
        .await;
    assert_eq!(b["totalElements"], 2, "{b}");
    assert_eq!(b["workloads"].as_array().unwrap(), &all[2..].to_vec());
    let (s, b) = cp
        .get(&cp.at(&format!(
            "/canopy/v1/projects/{P}/resource/workloads/deployments/00000000-0000-4000-8000-000000000000"
        )))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = cp
        .get(&cp.at(&format!(
            "/canopy/v1/projects/{P}/resource/workloads/deployments/{id}?pageSize=501"
        )))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // An image error shows as the VM's state with the agent's message.
    let report = running_report(&mut agent, "ERROR_IMAGE_PULL");
    agent.send(&report).await;
    let v = workloads(&cp, &vm).await;
    assert_eq!(
        v[0]["virtualMachine"]["status"]["state"],
        "STATE_ERROR_IMAGE_PULL"
    );
    assert_eq!(
        v[0]["virtualMachine"]["status"]["message"],
        "sha256 mismatch"
    );

    // Unknown application, unknown edge, an edge that does not run the app.
    for (path, code) in [
        (
            "/workloads/applications/b-0000000000000000/clusters/e1",
            404,
        ),
        (
            &format!("/workloads/applications/{web}/clusters/nowhere"),
            404,
        ),
        (
            &format!("/endpoints/applications/{web}/clusters/nowhere"),
            404,
        ),
    ] {
        let (s, b) = cp.get(&res(&cp, path)).await;
        assert_eq!(s.as_u16(), code, "{path}: {b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    }
}

#[tokio::test]
async fn vm_actions_and_pod_deletes_reach_the_edge_and_survive_restarts() {
    let (cp, mut agent, id) = deployed().await;
    let web = app_id(&cp, &id, "edge-web").await;
    let vm = app_id(&cp, &id, "vm").await;
    let vm_id = workloads(&cp, &vm).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let action = |what: &str| {
        res(
            &cp,
            &format!("/workloads/applications/{vm}/clusters/e1/virtual-machines/{vm_id}/{what}"),
        )
    };
    assert!(agent.held.controls.is_empty(), "no action yet");

    let (s, b) = cp.put(&action("stop"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({}));
    let c = control(&mut agent, "vm", WorkloadKind::Vm)
        .await
        .expect("stop reaches the edge");
    assert_eq!(
        (c.workload.as_str(), c.running, c.restarts),
        ("tiny", false, 0)
    );
    assert_eq!(
        workloads(&cp, &vm).await[0]["virtualMachine"]["adminStatus"]["state"],
        "STATE_DOWN"
    );

    cp.put(&action("start"), &json!({})).await;
    let c = control(&mut agent, "vm", WorkloadKind::Vm).await.unwrap();
    assert!(c.running);
    cp.put(&action("restart"), &json!({})).await;
    let c = control(&mut agent, "vm", WorkloadKind::Vm).await.unwrap();
    assert_eq!((c.running, c.restarts), (true, 1));
    // Restarting a stopped VM starts it.
    cp.put(&action("stop"), &json!({})).await;
    agent.poll(5).await;
    let (s, _) = cp.put(&action("restart"), &json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let c = control(&mut agent, "vm", WorkloadKind::Vm).await.unwrap();
    assert_eq!((c.running, c.restarts), (true, 2));

    // Pod delete: the app's containers are recreated (a restart counter on the pod).
    let pod = workloads(&cp, &web).await[0].clone();
    let (ns, name) = (
        pod["namespace"].as_str().unwrap(),
        pod["name"].as_str().unwrap(),
    );
    let del = |ns: &str, name: &str| {
        res(
            &cp,
            &format!("/workloads/pods/clusters/e1/namespaces/{ns}/pods/{name}/delete"),
        )
    };
    let (s, b) = cp.put(&del(ns, name), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let c = control(&mut agent, "edge-web", WorkloadKind::Pod)
        .await
        .expect("pod delete reaches the edge");
    assert_eq!((c.workload.as_str(), c.restarts), ("", 1));
    let (s, b) = cp.put(&del("elsewhere", name), &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(b["message"].as_str().unwrap().contains(name), "{b}");

    // Bad targets: a pod's id is not a VM; unknown ids; the VNC address of a VM.
    let pod_id = pod["id"].as_str().unwrap();
    let on_pod = res(
        &cp,
        &format!("/workloads/applications/{web}/clusters/e1/virtual-machines/{pod_id}/stop"),
    );
    let (s, b) = cp.put(&on_pod, &json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("not a virtual machine"),
        "{b}"
    );
    let unknown = res(
        &cp,
        &format!(
            "/workloads/applications/{vm}/clusters/e1/virtual-machines/{}/start",
            uuid::Uuid::new_v4()
        ),
    );
    let (s, _) = cp.put(&unknown, &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = cp.get(&action("vnc")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let address = b["address"].as_str().unwrap();
    assert!(
        address.starts_with("ws://127.0.0.1:")
            && address.ends_with(&format!("/vnc/{P}/{vm}/e1/{vm_id}")),
        "{address}"
    );

    // Over HTTP/2 the host comes from `:authority` (there is no Host header).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(action("vnc"))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["address"].as_str(), Some(address), "{b}");

    // Controls are stored with the fleet: a restarted control plane still sends them.
    let cp = cp.restart().await;
    agent.held = Default::default();
    agent.poll(5).await.unwrap();
    let mut controls = agent.held.controls.clone();
    controls.sort_by_key(|c| c.kind);
    assert_eq!(controls.len(), 2, "{controls:?}");
    assert_eq!(
        (controls[0].kind, controls[0].restarts),
        (WorkloadKind::Pod, 1)
    );
    assert_eq!(
        (controls[1].kind, controls[1].restarts),
        (WorkloadKind::Vm, 2)
    );

    // Deleting the deployment deletes its controls.
    let (s, b) = cp
        .delete(&cp.at(&format!("/v1/projects/{P}/appdeployment/deployments/{id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    agent.poll(5).await.unwrap();
    assert!(agent.held.controls.is_empty(), "{:?}", agent.held.controls);
    let cp = cp.restart().await;
    agent.held = Default::default();
    agent.poll(5).await.unwrap();
    assert!(
        agent.held.controls.is_empty(),
        "controls deleted in the store too"
    );
    drop(cp);
}

#[tokio::test]
async fn operators_need_write_access_and_other_projects_see_nothing() {
    let (cp, _agent, id) = deployed().await;
    let vm = app_id(&cp, &id, "vm").await;
    let vm_id = workloads(&cp, &vm).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    cp.create_project("other").await;
    let reader = cp.user_token("reader", &["default_ao-r"]).await;
    let stranger = cp.user_token("stranger", &["other_ao-rw"]).await;
    let list = res(&cp, &format!("/workloads/applications/{vm}/clusters/e1"));
    let stop = res(
        &cp,
        &format!("/workloads/applications/{vm}/clusters/e1/virtual-machines/{vm_id}/stop"),
    );
    let vnc = stop.replace("/stop", "/vnc");
    let http = cp.anonymous_http();
    let code = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        code(http.get(&list).bearer_auth(&reader).send().await.unwrap()),
        200
    );
    assert_eq!(
        code(http.put(&stop).bearer_auth(&reader).send().await.unwrap()),
        403
    );
    assert_eq!(
        code(http.get(&vnc).bearer_auth(&reader).send().await.unwrap()),
        403
    );
    assert_eq!(
        code(http.get(&list).bearer_auth(&stranger).send().await.unwrap()),
        404
    );
    assert_eq!(
        code(http.put(&stop).bearer_auth(&stranger).send().await.unwrap()),
        404
    );
    assert_eq!(code(http.put(&stop).send().await.unwrap()), 401);
    // The stranger's own project does not know the app either.
    let theirs = cp.at(&format!(
        "/v1/projects/other/resource/workloads/applications/{vm}/clusters/e1"
    ));
    let r = http
        .get(&theirs)
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Actions are audited with their actor.
    let (s, _) = cp.put(&stop, &json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = cp
        .get(&cp.at(&format!("/canopy/v1/projects/{P}/audit")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let text = b.to_string();
    assert!(
        text.contains("virtual-machines") || text.contains("stop"),
        "{text:.2000}"
    );
}
