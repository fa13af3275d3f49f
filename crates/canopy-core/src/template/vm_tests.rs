//! Virtual machines in workload templates: rendering from values, every rule with its message,
//! registry paths, mixing with containers, and the upload check's placeholders.

use canopy_proto::{RestartPolicy, VmBoot, VmImage};
use serde_json::json;

use super::tests::{assert_err, ctx, workloads};
use super::*;
use crate::catalog::ParameterTemplate;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A kernel-booted VM whose every field comes from values.
const VM: &str = r#"vms:
  - name: {{ values.name | tojson }}
    cpus: {{ values.cpus }}
    memory: {{ values.memory | tojson }}
    kernel: {url: {{ values.kernelUrl | tojson }}, sha256: {{ values.kernelSha256 | tojson }}}
    initrd: {url: "https://images.example.com/initrd.img", sha256: "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"}
    cmdline: "console=ttyS0 quiet"
    extraDisks: [{sizeGib: {{ values.disk }}}]
    ports:
      - {guestPort: 80, hostPort: {{ values.port }}}
      - {guestPort: 22, hostPort: 2222, hostIp: 127.0.0.1, protocol: tcp}
    cloudInit:
      userData: |
        #cloud-config
        hostname: {{ values.name }}
      metaData: "instance-id: {{ deployment.id }}"
    vnc: {{ values.vnc }}
    restartPolicy: on-failure
"#;

fn param(name: &str, ty: &str, mandatory: bool) -> ParameterTemplate {
    ParameterTemplate {
        name: name.into(),
        param_type: ty.into(),
        mandatory,
        ..Default::default()
    }
}

fn vm_app(template: &str) -> Application {
    Application {
        name: "vm".into(),
        version: "1.0.0".into(),
        workload_template: template.into(),
        default_profile_name: "default".into(),
        profiles: vec![Profile {
            name: "default".into(),
            chart_values: "name: tiny\ncpus: 2\nmemory: 256Mi\ndisk: 4\nport: 18090\nvnc: true\n"
                .into(),
            parameter_templates: vec![
                param("kernelUrl", "string", true),
                param("kernelSha256", "string", true),
                param("port", "number", false),
                param("memory", "string", false),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn kernel_overrides() -> Value {
    json!({"kernelUrl": "https://images.example.com/vmlinuz", "kernelSha256": SHA_A})
}

/// A minimal disk-booted VM document, with `extra` YAML mapping entries added to the VM.
fn disk_vm(extra: &str) -> String {
    format!(
        "vms:\n  - {{name: vm, memory: 64, image: {{url: \"https://x.example/d.qcow2\", sha256: \"{SHA_A}\"}}{extra}}}\n"
    )
}

#[test]
fn renders_a_vm_from_profile_values_and_overrides() {
    let app = vm_app(VM);
    check_template(&app).unwrap();
    let w = render(&app, "default", &kernel_overrides(), &ctx()).unwrap();
    assert!(w.containers.is_empty());
    assert_eq!(w.vms.len(), 1);
    let vm = &w.vms[0];
    assert_eq!(vm.name, "tiny");
    assert_eq!(vm.cpus, 2);
    assert_eq!(vm.memory_mib, 256);
    assert_eq!(
        vm.boot,
        VmBoot::Kernel {
            kernel: VmImage {
                url: "https://images.example.com/vmlinuz".into(),
                sha256: SHA_A.into(),
            },
            initrd: Some(VmImage {
                url: "https://images.example.com/initrd.img".into(),
                sha256: SHA_B.into(),
            }),
            cmdline: "console=ttyS0 quiet".into(),
        },
        "uppercase sha256 is taken as lowercase"
    );
    assert_eq!(vm.extra_disks[0].size_gib, 4);
    assert_eq!((vm.ports[0].guest_port, vm.ports[0].host_port), (80, 18090));
    assert_eq!(vm.ports[0].host_ip, None);
    assert_eq!(vm.ports[1].host_ip.as_deref(), Some("127.0.0.1"));
    let ci = vm.cloud_init.as_ref().unwrap();
    assert_eq!(ci.user_data, "#cloud-config\nhostname: tiny\n");
    assert_eq!(ci.meta_data.as_deref(), Some("instance-id: d-1"));
    assert!(vm.vnc);
    assert_eq!(vm.restart_policy, RestartPolicy::OnFailure);

    // Override values win, coerced by their parameter: the port from a string, memory as MiB.
    let mut o = kernel_overrides();
    o["port"] = json!("18091");
    o["memory"] = json!(512);
    let vm = &render(&app, "", &o, &ctx()).unwrap().vms[0];
    assert_eq!(vm.ports[0].host_port, 18091);
    assert_eq!(vm.memory_mib, 512, "\"512\" (a string parameter) is MiB");
    // Without the mandatory values, the deployment is refused.
    let e = render(&app, "", &Value::Null, &ctx()).unwrap_err();
    assert_eq!(e.field, "values.kernelUrl");
}

#[test]
fn defaults() {
    let w = workloads(&disk_vm("")).unwrap();
    let vm = &w.vms[0];
    assert_eq!(vm.cpus, 1);
    assert_eq!(vm.memory_mib, 64);
    assert!(!vm.vnc);
    assert_eq!(vm.restart_policy, RestartPolicy::Always);
    assert!(vm.extra_disks.is_empty() && vm.ports.is_empty() && vm.cloud_init.is_none());
    assert_eq!(
        vm.boot,
        VmBoot::Disk {
            image: VmImage {
                url: "https://x.example/d.qcow2".into(),
                sha256: SHA_A.into()
            }
        }
    );
}

#[test]
fn memory_spellings() {
    for (memory, mib) in [
        ("16", 16),
        ("\"128\"", 128),
        ("512Mi", 512),
        ("1Gi", 1024),
        ("1.5Gi", 1536),
        ("1Ti", 1 << 20),
        ("1048576Ki", 1024),
    ] {
        let doc = format!(
            "vms:\n  - {{name: vm, memory: {memory}, image: {{url: \"https://x.example/d\", sha256: \"{SHA_A}\"}}}}\n"
        );
        assert_eq!(workloads(&doc).unwrap().vms[0].memory_mib, mib, "{memory}");
    }
    let memory = |m: &str| {
        workloads(&format!(
            "vms:\n  - {{name: vm, memory: {m}, image: {{url: \"https://x.example/d\", sha256: \"{SHA_A}\"}}}}\n"
        ))
    };
    assert_err(memory("8"), "vms[0].memory", "minimum of 16");
    assert_err(memory("2000000"), "vms[0].memory", "maximum of 1048576");
    assert_err(memory("8Mi"), "vms[0].memory", "smallest VM memory, 16 MiB");
    assert_err(memory("2Ti"), "vms[0].memory", "largest VM memory");
    assert_err(memory("512M"), "vms[0].memory", "512Mi");
    assert_err(
        memory("512MB"),
        "vms[0].memory",
        "\"512MB\" must be MiB or a size",
    );
    assert_err(memory("1.5"), "vms[0].memory", "1.5");
    assert_err(
        workloads(&format!(
            "vms:\n  - {{name: vm, image: {{url: \"https://x.example/d\", sha256: \"{SHA_A}\"}}}}\n"
        )),
        "vms[0].memory",
        "is required",
    );
}

#[test]
fn every_vm_error_names_field_and_value() {
    let sha = SHA_A;
    // Name.
    assert_err(
        workloads(&disk_vm("").replace("name: vm", "name: Vm")),
        "vms[0].name",
        "\"Vm\" must be 1-40 lowercase letters",
    );
    let long = "v".repeat(41);
    assert_err(
        workloads(&disk_vm("").replace("name: vm", &format!("name: {long}"))),
        "vms[0].name",
        "1-40",
    );
    workloads(&disk_vm("").replace("name: vm", &format!("name: {}", &long[..40]))).unwrap();
    assert_err(
        workloads(&format!("{}{}", disk_vm(""), &disk_vm("")[5..])),
        "vms[1].name",
        "\"vm\" is also the name of vms[0]",
    );
    // CPUs.
    assert_err(
        workloads(&disk_vm(", cpus: 0")),
        "vms[0].cpus",
        "0 is less than the minimum of 1",
    );
    assert_err(
        workloads(&disk_vm(", cpus: 65")),
        "vms[0].cpus",
        "65 is greater than the maximum of 64",
    );
    // Boot: exactly one form.
    assert_err(
        workloads("vms:\n  - {name: vm, memory: 64}\n"),
        "vms[0].image",
        "is required: a VM boots from a disk image (image) or from a kernel",
    );
    assert_err(
        workloads(&disk_vm(&format!(
            ", kernel: {{url: \"https://x.example/k\", sha256: \"{sha}\"}}"
        ))),
        "vms[0].kernel",
        "not both",
    );
    assert_err(
        workloads(&disk_vm(", cmdline: quiet")),
        "vms[0].cmdline",
        "only for VMs that boot from a kernel",
    );
    assert_err(
        workloads(&disk_vm(&format!(
            ", initrd: {{url: \"https://x.example/i\", sha256: \"{sha}\"}}"
        ))),
        "vms[0].initrd",
        "only for VMs that boot from a kernel",
    );
    let kernel = |url: &str, sha: &str, extra: &str| {
        workloads(&format!(
            "vms:\n  - {{name: vm, memory: 64, kernel: {{url: {url:?}, sha256: {sha:?}}}{extra}}}\n"
        ))
    };
    assert_err(
        kernel("https://x.example/k", "abc", ""),
        "vms[0].kernel.sha256",
        "\"abc\" must be the SHA-256 of the file: 64 hexadecimal digits",
    );
    assert_err(
        kernel("https://x.example/k", &"g".repeat(64), ""),
        "vms[0].kernel.sha256",
        "64 hexadecimal digits",
    );
    assert_err(
        workloads("vms:\n  - {name: vm, memory: 64, kernel: {url: \"https://x.example/k\"}}\n"),
        "vms[0].kernel.sha256",
        "is required",
    );
    assert_err(
        kernel(
            "https://x.example/k",
            sha,
            &format!(
                ", initrd: {{url: \"https://x.example/i\", sha256: \"{}\"}}",
                &sha[1..]
            ),
        ),
        "vms[0].initrd.sha256",
        "64 hexadecimal digits",
    );
    assert_err(
        kernel("https://x.example/k", sha, ", cmdline: \"a\\nb\""),
        "vms[0].cmdline",
        "single line",
    );
    // URLs.
    for (url, says) in [
        (
            "ftp://x.example/k",
            "\"ftp://x.example/k\" has the unsupported scheme \"ftp\"",
        ),
        ("https:///k", "has no host"),
        ("https://user:pw@x.example/k", "credentials"),
        ("file://host/k", "file:///absolute/path"),
        ("file:///srv/../etc/shadow", "'..'"),
        ("/srv/vm/k", "neither a URL"),
        ("http:/x.example/k", "neither a URL"),
        ("images/../k", "'..'"),
        ("images//k", "empty"),
        (
            "images/k",
            "\"images/k\" is a path relative to the app's image registry, but the application has no image registry",
        ),
    ] {
        assert_err(kernel(url, sha, ""), "vms[0].kernel.url", says);
    }
    assert_err(
        kernel("https://x.example/a b", sha, ""),
        "vms[0].kernel.url",
        "without spaces",
    );
    for ok in [
        "https://x.example/k",
        "http://10.0.0.1:8080/k?v=1",
        "file:///var/lib/canopy/images/k",
    ] {
        let w = kernel(ok, sha, "").unwrap();
        let VmBoot::Kernel {
            kernel,
            initrd,
            cmdline,
        } = &w.vms[0].boot
        else {
            panic!("not a kernel boot");
        };
        assert_eq!(kernel.url, ok);
        assert!(initrd.is_none() && cmdline.is_empty());
    }
    assert_err(
        workloads(&disk_vm(", image: {url: x}").replace(
            &format!("image: {{url: \"https://x.example/d.qcow2\", sha256: \"{sha}\"}}, "),
            "",
        )),
        "vms[0].image.sha256",
        "is required",
    );
    // Disks.
    assert_err(
        workloads(&disk_vm(", extraDisks: [{sizeGib: 0}]")),
        "vms[0].extraDisks[0].sizeGib",
        "0 is less than the minimum of 1",
    );
    assert_err(
        workloads(&disk_vm(", extraDisks: [{sizeGib: 2048}]")),
        "vms[0].extraDisks[0].sizeGib",
        "2048 is greater than the maximum of 1024",
    );
    assert_err(
        workloads(&disk_vm(", extraDisks: [{size: 10Gi}]")),
        "vms[0].extraDisks[0].size",
        "unknown field",
    );
    // Ports.
    assert_err(
        workloads(&disk_vm(
            ", ports: [{guestPort: 53, hostPort: 53, protocol: udp}]",
        )),
        "vms[0].ports[0].protocol",
        "\"udp\" is not supported: VM ports are TCP only",
    );
    assert_err(
        workloads(&disk_vm(", ports: [{guestPort: 80}]")),
        "vms[0].ports[0].hostPort",
        "is required",
    );
    assert_err(
        workloads(&disk_vm(", ports: [{guestPort: 80, hostPort: 70000}]")),
        "vms[0].ports[0].hostPort",
        "70000 is greater than the maximum of 65535",
    );
    assert_err(
        workloads(&disk_vm(
            ", ports: [{guestPort: 80, hostPort: 8080, hostIp: localhost}]",
        )),
        "vms[0].ports[0].hostIp",
        "\"localhost\" is not an IPv4 or IPv6 address",
    );
    assert_err(
        workloads(&disk_vm(
            ", ports: [{guestPort: 80, hostPort: 8080}, {guestPort: 81, hostPort: 8080}]",
        )),
        "vms[0].ports[1].hostPort",
        "host port 8080/tcp is already published by vms[0].ports[0]",
    );
    // cloud-init.
    assert_err(
        workloads(&disk_vm(", cloudInit: {metaData: x}")),
        "vms[0].cloudInit.userData",
        "is required",
    );
    let big = "x".repeat(CLOUD_INIT_MAX_BYTES + 1);
    assert_err(
        workloads(&disk_vm(&format!(", cloudInit: {{userData: {big}}}"))),
        "vms[0].cloudInit.userData",
        "65537 characters long, more than the maximum of 65536",
    );
    // Multi-byte characters: within the schema's character count, over the byte bound.
    let wide = "é".repeat(CLOUD_INIT_MAX_BYTES / 2 + 1);
    assert_err(
        workloads(&disk_vm(&format!(
            ", cloudInit: {{userData: x, metaData: {wide}}}"
        ))),
        "vms[0].cloudInit.metaData",
        "65538 bytes, more than the maximum of 65536",
    );
    // Other fields.
    assert_err(
        workloads(&disk_vm(", vnc: maybe")),
        "vms[0].vnc",
        "\"maybe\"",
    );
    assert_err(
        workloads(&disk_vm(", restartPolicy: sometimes")),
        "vms[0].restartPolicy",
        "sometimes",
    );
    assert_err(
        workloads(&disk_vm(", cpu: 2")),
        "vms[0].cpu",
        "unknown field",
    );
}

#[test]
fn registry_paths_resolve_against_the_image_registry() {
    let doc = format!(
        "vms:\n  - {{name: vm, memory: 64, image: {{url: images/debian-12.qcow2, sha256: \"{SHA_A}\"}}}}\n"
    );
    let app = Application {
        name: "x".into(),
        version: "1".into(),
        workload_template: doc.clone(),
        ..Default::default()
    };
    let with = |root: &str| {
        let mut c = ctx();
        c.image_registry_url = Some(root.into());
        let w = render(&app, "", &Value::Null, &c).unwrap();
        match &w.vms[0].boot {
            VmBoot::Disk { image } => image.url.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        with("https://registry.example.com:5000/team/"),
        "https://registry.example.com:5000/team/images/debian-12.qcow2"
    );
    assert_eq!(
        with("http://localhost:5000"),
        "http://localhost:5000/images/debian-12.qcow2"
    );
    assert_eq!(
        with("oci://registry.example.com/vms"),
        "https://registry.example.com/vms/images/debian-12.qcow2"
    );
    // Absolute URLs are never changed.
    assert_eq!(
        vm_url(
            "https://other.example/x",
            Some("https://registry.example.com")
        )
        .unwrap(),
        "https://other.example/x"
    );
    // Without a registry, a relative path is an error.
    assert_err(workloads(&doc), "vms[0].image.url", "no image registry");
}

#[test]
fn containers_and_vms_mix() {
    let doc = format!(
        "containers:\n  - {{name: web, image: busybox, ports: [{{containerPort: 80, hostPort: 8080}}, {{containerPort: 53, hostPort: 5353, protocol: udp}}]}}\nvms:\n  - {{name: web, memory: 64, image: {{url: \"https://x.example/d\", sha256: \"{SHA_A}\"}}, ports: [{{guestPort: 53, hostPort: 5353}}]}}\n"
    );
    // A VM may share its name with a container (they are told apart by kind), and a TCP host
    // port with a container's UDP one.
    let w = workloads(&doc).unwrap();
    assert_eq!(w.containers.len(), 1);
    assert_eq!(w.vms.len(), 1);
    assert_eq!(w.vms[0].ports[0].host_port, 5353);
    // The same TCP host port is refused across kinds.
    let clash = doc.replace(
        "guestPort: 53, hostPort: 5353",
        "guestPort: 80, hostPort: 8080",
    );
    assert_err(
        workloads(&clash),
        "vms[0].ports[0].hostPort",
        "host port 8080/tcp is already published by containers[0].ports[0]",
    );
}

#[test]
fn upload_check_tolerates_placeholders_only() {
    // kernelUrl and kernelSha256 are mandatory and have no profile value: placeholders, fine.
    let app = vm_app(VM);
    check_template(&app).unwrap();
    // A real value from the profile is checked.
    let mut bad = vm_app(VM);
    bad.profiles[0]
        .chart_values
        .push_str("kernelUrl: https://x.example/k\nkernelSha256: nothex\n");
    let e = check_template(&bad).unwrap_err();
    assert_eq!(e.field, "vms[0].kernel.sha256");
    assert!(e.message.contains("\"nothex\""), "{e}");
    let mut bad = vm_app(VM);
    bad.profiles[0].chart_values.push_str(&format!(
        "kernelUrl: images/vmlinuz\nkernelSha256: {SHA_A}\n"
    ));
    let e = check_template(&bad).unwrap_err();
    assert_eq!(e.field, "vms[0].kernel.url");
    assert!(e.message.contains("no image registry"), "{e}");
    // ... unless the app names an image registry (resolved at deploy).
    bad.image_registry_name = "images".into();
    check_template(&bad).unwrap();
    // The word itself, when no parameter got a placeholder, is checked like any value.
    let literal = VM.replace("{{ values.kernelSha256 | tojson }}", "\"placeholder\"");
    let mut app = vm_app(&literal);
    app.profiles[0].parameter_templates.drain(0..2);
    app.profiles[0]
        .chart_values
        .push_str("kernelUrl: https://x.example/k\n");
    let e = check_template(&app).unwrap_err();
    assert_eq!(e.field, "vms[0].kernel.sha256");
    // Numeric placeholders (30000 + index) stand in for cpus, memory and disk sizes.
    let mut app = vm_app(VM);
    app.profiles[0].chart_values = "name: tiny\nmemory: 256Mi\nport: 18090\nvnc: true\n".into();
    app.profiles[0]
        .parameter_templates
        .extend([param("cpus", "number", true), param("disk", "number", true)]);
    check_template(&app).unwrap();
    // ...while the same out-of-range value from the profile is refused.
    app.profiles[0].chart_values.push_str("cpus: 30004\n");
    let e = check_template(&app).unwrap_err();
    assert_eq!(e.field, "vms[0].cpus");
}
