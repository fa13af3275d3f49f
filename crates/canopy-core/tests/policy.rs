//! The project policy applied to rendered workloads (`RenderContext::policy`): images and VM
//! files of the application's image registry against the allowed registries, other VM files
//! against the allowed hosts, host ports of containers and VMs, default and maximum resources.
//! Each violation names the field, the value and the rule.

use canopy_core::catalog::Application;
use canopy_core::policy::ProjectPolicy;
use canopy_core::template::{self, RenderContext, TemplateError, Workloads};
use serde_json::{Value, json};

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn render(template: &str, policy: Value) -> Result<Workloads, TemplateError> {
    let app = Application {
        name: "a".into(),
        version: "1.0.0".into(),
        workload_template: template.into(),
        ..Default::default()
    };
    let ctx = RenderContext {
        deployment_id: "d".into(),
        deployment_name: "d".into(),
        namespace: "d".into(),
        project: "default".into(),
        image_registry_url: Some("https://registry.example.com:5000/edge".into()),
        policy: Some(serde_json::from_value::<ProjectPolicy>(policy).unwrap()),
    };
    template::render(&app, "", &Value::Null, &ctx)
}

#[track_caller]
fn refused(template: &str, policy: Value, field: &str, parts: &[&str]) {
    let e = render(template, policy).unwrap_err();
    assert_eq!(e.field, field, "{e}");
    for p in parts {
        assert!(e.message.contains(p), "{p:?} missing: {e}");
    }
}

fn vm(url: &str) -> String {
    format!(
        "vms:\n  - {{name: v, memory: 64, cpus: 2, image: {{url: \"{url}\", sha256: \"{SHA}\"}}, ports: [{{guestPort: 22, hostPort: 2222}}]}}\n"
    )
}

#[test]
fn the_default_policy_allows_what_rendered_before() {
    let t =
        "containers:\n  - {name: a, image: busybox, ports: [{containerPort: 80, hostPort: 80}]}\n";
    let w = render(t, json!({})).unwrap();
    assert_eq!(
        w.containers[0].image,
        "registry.example.com:5000/edge/busybox"
    );
    assert_eq!(
        (w.containers[0].cpus, w.containers[0].memory_bytes),
        (None, None)
    );
    render(&vm("file:///var/lib/images/x.qcow2"), json!({})).unwrap();
    render(&vm("http://169.254.169.254/x"), json!({})).unwrap();
}

#[test]
fn images_resolve_before_the_registry_rule() {
    let t = "containers:\n  - {name: a, image: busybox}\n  - {name: b, image: docker.io/library/busybox:1}\n";
    render(
        t,
        json!({"allowedImageRegistries": ["registry.example.com:5000/edge", "docker.io/library"]}),
    )
    .unwrap();
    refused(
        t,
        json!({"allowedImageRegistries": ["registry.example.com:5000/edge"]}),
        "containers[1].image",
        &[
            "\"docker.io/library/busybox:1\"",
            "allowedImageRegistries is registry.example.com:5000/edge",
        ],
    );
    refused(
        t,
        json!({"allowedImageRegistries": ["registry.example.com/edge"]}),
        "containers[0].image",
        &["registry.example.com:5000/edge/busybox"],
    );
}

#[test]
fn vm_files_of_the_image_registry_follow_the_registry_rule() {
    let from_registry = vm("vms/debian.qcow2");
    // Allowed by the registry list, whatever the host list says.
    render(&from_registry, json!({"allowedImageRegistries": ["registry.example.com:5000/edge/vms"], "allowedVmImageHosts": []})).unwrap();
    refused(
        &from_registry,
        json!({"allowedImageRegistries": ["docker.io"]}),
        "vms[0].image.url",
        &[
            "https://registry.example.com:5000/edge/vms/debian.qcow2",
            "image registry registry.example.com:5000/edge",
            "allowedImageRegistries is docker.io",
        ],
    );
    // Any other URL: the host list.
    let direct = vm("https://images.example.com/debian.qcow2");
    render(
        &direct,
        json!({"allowedImageRegistries": [], "allowedVmImageHosts": ["*.example.com"]}),
    )
    .unwrap();
    refused(
        &direct,
        json!({"allowedVmImageHosts": ["images.example.org", "*.images.example.com"]}),
        "vms[0].image.url",
        &[
            "(host images.example.com)",
            "allowedVmImageHosts is images.example.org, *.images.example.com",
        ],
    );
    refused(
        &vm("file:///etc/shadow"),
        json!({"allowFileUrls": false}),
        "vms[0].image.url",
        &["\"file:///etc/shadow\"", "allowFileUrls is false"],
    );
    refused(
        &vm("https://[::1]:8443/x"),
        json!({"allowedVmImageHosts": ["[::1]"]}),
        "vms[0].image.url",
        &["host [::1]:8443"],
    );
    render(
        &vm("https://[::1]:8443/x"),
        json!({"allowedVmImageHosts": ["[::1]:8443"]}),
    )
    .unwrap();
}

#[test]
fn host_ports_and_resources() {
    let t = "containers:\n  - {name: a, image: x.example.com/a, ports: [{containerPort: 80, hostPort: 30080}]}\n  - {name: b, image: x.example.com/b, resources: {cpus: 2, memory: 1Gi}}\n";
    let limits = json!({"defaultResources": {"cpus": 0.5, "memory": "256Mi"}, "maxResources": {"cpus": 2, "memory": "1Gi"}});
    let w = render(t, limits.clone()).unwrap();
    assert_eq!(
        (w.containers[0].cpus, w.containers[0].memory_bytes),
        (Some(0.5), Some(256 << 20))
    );
    assert_eq!(
        (w.containers[1].cpus, w.containers[1].memory_bytes),
        (Some(2.0), Some(1 << 30))
    );
    refused(
        t,
        json!({"defaultResources": {"cpus": 0.5}, "maxResources": {"cpus": 1.5}}),
        "containers[1].resources.cpus",
        &["2 is more than the project policy allows: maxResources.cpus is 1.5"],
    );
    refused(
        t,
        json!({"defaultResources": {"memory": "64Mi"}, "maxResources": {"memory": "512Mi"}}),
        "containers[1].resources.memory",
        &["1073741824 bytes", "maxResources.memory is 512Mi"],
    );
    refused(
        t,
        json!({"allowedHostPorts": {"min": 1024, "max": 30000}}),
        "containers[0].ports[0].hostPort",
        &["host port 30080", "allowedHostPorts is 1024-30000"],
    );
    let v = vm("https://images.example.com/x");
    refused(
        &v,
        json!({"allowedHostPorts": {"min": 3000, "max": 4000}}),
        "vms[0].ports[0].hostPort",
        &["2222"],
    );
    refused(
        &v,
        json!({"defaultResources": {"cpus": 1}, "maxResources": {"cpus": 1}}),
        "vms[0].cpus",
        &["2 vCPUs", "maxResources.cpus is 1"],
    );
    refused(
        &v,
        json!({"defaultResources": {"memory": "16Mi"}, "maxResources": {"memory": "32Mi"}}),
        "vms[0].memory",
        &["64 MiB", "maxResources.memory is 32Mi"],
    );
}
