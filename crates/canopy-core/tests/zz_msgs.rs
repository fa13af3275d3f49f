use canopy_core::upload::*;
fn f(n: &str, c: &str) -> UploadFile { UploadFile { name: n.into(), content: c.as_bytes().to_vec() } }
#[test]
fn show() {
    let h = "specSchema: Application\nschemaVersion: \"0.1\"\n";
    let cases: Vec<Vec<UploadFile>> = vec![
        vec![f("a.yaml", &format!("{h}name: A_b\nversion: 1.0\ndescription: d\nhelmRegistry: h\nchartName: X\nchartVersion: \"1\"\nprofiles: [{{name: p, parameterTemplates: [{{name: x, type: float}}]}}]\n"))],
        vec![f("a.yaml", &format!("{h}name: a\nversion: 1.0\n"))],
        vec![f("a.yaml", "specSchema: Application\n")],
        vec![f("a.yaml", "specSchema: [1]\n")],
        vec![f("a.yaml", "specSchema: Registry\nschemaVersion: \"0.2\"\nname: r\ndescription: d\ntype: helm\nrootUrl: ftp://x\nauthToken: 5\n")],
        vec![f("a.yaml", "name: x\n  bad: indent\n")],
        vec![f("a.yaml", "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\nname: p\nversion: \"1\"\ndescription: d\napplications: []\ndeploymentProfiles: [{name: d, applicationProfiles: [{application: a, profile: x, extra: 1}]}]\n")],
        vec![f("a.yaml", "specSchema: DeploymentPackage\nschemaVersion: \"0.1\"\nname: p\nversion: \"1\"\ndescription: d\napplications: [{name: a, version: \"1\"}]\napplicationDependencies: [{name: a, requires: b}]\n")],
        vec![f("a.yaml", &format!("{h}name: a\nversion: \"1\"\ndescription: d\nhelmRegistry: h\nchartName: x\nchartVersion: \"1\"\nprofiles:\n  - name: p\n    chartValues: {{a: 1}}\n"))],
        vec![f("a.yaml", "specSchema: Artifact\nschemaVersion: \"0.1\"\nname: i\ndescription: d\nmimeType: image/png\nartifact: aGVsbG8=\n")],
    ];
    for c in cases {
        match parse_upload(&c) { Ok(s) => println!("OK {s:?}"), Err(e) => for m in e.messages { println!("  {m}") } }
        println!("--");
    }
}
