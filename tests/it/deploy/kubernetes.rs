//! The manifests in deploy/kubernetes/: valid for the Kubernetes API by a real schema validator
//! (the PyPI package `kubernetes-validate`, installed by .ci/run), and right for alb in the ways no
//! schema knows: the ConfigMap's TOML passes `alb check`, the grace period covers the preStop pause
//! plus `timeouts.drain`, the probes name paths and a port that alb answers on, the backends are
//! found through the headless Service, and the pods run locked down.
//!
//! Without the validator the schema test prints SKIPPED and passes, except under CI (env `CI` set),
//! where a missing validator is a failure: CI must not go green without having validated.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use serde::Deserialize;
use serde_json::Value;

/// The Kubernetes version validated against: the first whose `lifecycle.preStop.sleep` is on by
/// default (beta in 1.30), which the manifests rely on.
const KUBERNETES_VERSION: &str = "1.30.0";

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every `.yaml` file in the manifest directory, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of every manifest file, as JSON values.
fn documents() -> Vec<Value> {
    let mut docs = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
            docs.push(value);
        }
    }
    docs
}

/// The one document of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} named {name}");
    found[0]
}

/// The first container of a Deployment's pod template.
fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The alb config file the ConfigMap holds, as text.
fn configmap_text(docs: &[Value]) -> String {
    find(docs, "ConfigMap", "alb-config")["data"]["alb.toml"]
        .as_str()
        .expect("alb-config has data.alb.toml")
        .to_string()
}

/// The ConfigMap's config as alb parses it.
fn configmap_config(docs: &[Value]) -> alb::Config {
    alb::Config::from_toml(&configmap_text(docs), "alb-config")
        .unwrap_or_else(|e| panic!("the ConfigMap's TOML is not a valid alb config: {e}"))
}

/// A container port by name.
fn port_named(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The validator to run: `ALB_KUBERNETES_VALIDATE`, else the venv .ci/run makes in the target
/// directory, else one on PATH; Err says what was looked for.
fn validator() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ALB_KUBERNETES_VALIDATE") {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!(
                "ALB_KUBERNETES_VALIDATE={} is not a file",
                path.display()
            )),
        };
    }
    // This test binary is target/<profile>/deps/it-<hash>.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe.ancestors().nth(3).map(Path::to_path_buf);
    let venv = target.map(|t| t.join("kubernetes-validate/bin/kubernetes-validate"));
    if let Some(venv) = venv.as_ref().filter(|p| p.is_file()) {
        return Ok(venv.clone());
    }
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return Ok(PathBuf::from("kubernetes-validate"));
    }
    Err(format!(
        "kubernetes-validate not found (ALB_KUBERNETES_VALIDATE unset, no {}, none on PATH); \
         `bash .ci/run` installs it, or: pip install kubernetes-validate",
        venv.map_or_else(|| "venv".into(), |p| p.display().to_string())
    ))
}

/// Runs the validator in strict mode on `files`; exit success and everything it printed.
fn validate(validator: &Path, version: &str, files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(validator)
        .args(["-k", version, "--strict"])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[test]
fn manifests_pass_a_kubernetes_schema_validator_that_catches_errors() {
    let validator = match validator() {
        Ok(v) => v,
        Err(why) => {
            crate::support::prerequisite::missing(
                "manifests_pass_a_kubernetes_schema_validator_that_catches_errors",
                &why,
            );
            return;
        }
    };
    let files = manifest_files();
    let (ok, printed) = validate(&validator, KUBERNETES_VERSION, &files);
    assert!(ok, "{printed}");
    let passed = printed.matches("passed for resource").count();
    assert_eq!(
        passed,
        documents().len(),
        "every document validated:\n{printed}"
    );

    // The validator can fail: a misspelt field (strict mode) and a wrongly typed value.
    let dir = TempDir::new("kubernetes-broken");
    let deployment = std::fs::read_to_string(manifest_dir().join("alb-deployment.yaml"))
        .expect("read alb-deployment.yaml");
    for (from, to, complaint) in [
        (
            "terminationGracePeriodSeconds:",
            "terminationGracePeriod:",
            "'terminationGracePeriod' was unexpected",
        ),
        (
            "replicas: 2",
            "replicas: two",
            "'two' is not of type 'integer'",
        ),
    ] {
        assert!(deployment.contains(from));
        let broken = dir.write("broken.yaml", &deployment.replacen(from, to, 1));
        let (ok, printed) = validate(&validator, KUBERNETES_VERSION, &[broken]);
        assert!(!ok, "{to} passed:\n{printed}");
        assert!(printed.contains(complaint), "{printed}");
    }
    // And the version matters: before 1.29 there was no preStop sleep action in the API.
    let (ok, printed) = validate(&validator, "1.28.0", &files);
    assert!(
        !ok && printed.contains("'sleep' was unexpected"),
        "{printed}"
    );
}

#[test]
fn the_configmap_is_a_config_alb_check_accepts() {
    let docs = documents();
    let dir = TempDir::new("kubernetes-config");
    let path = dir.write("alb.toml", &configmap_text(&docs));
    let output = Command::new(env!("CARGO_BIN_EXE_alb"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run alb check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("OK: 1 backend(s), least_conn, listening on 0.0.0.0:8080"),
        "{stdout}"
    );
    let config = configmap_config(&docs);
    assert_eq!(config.admin.listen, Some(([0, 0, 0, 0], 9090).into()));

    // The one backend is the headless Service, by name, on the port it serves.
    let backend = find(&docs, "Service", "backend");
    assert_eq!(backend["spec"]["clusterIP"], "None", "headless");
    let service_port = backend["spec"]["ports"][0]["port"].as_u64();
    assert_eq!(
        config.backends[0].url,
        format!("http://backend:{}", service_port.expect("backend port"))
    );
    let backend_args: Vec<&str> = container(find(&docs, "Deployment", "backend"))["args"]
        .as_array()
        .expect("backend args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        backend_args[..5],
        ["backend", "--host", "0.0.0.0", "--port", "8081"]
    );
}

#[test]
fn the_grace_period_covers_the_prestop_pause_and_the_drain() {
    let docs = documents();
    let config = configmap_config(&docs);
    let alb = find(&docs, "Deployment", "alb");
    let grace = alb["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pause = container(alb)["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop is the kubelet's sleep action (the image has no shell)");
    let drain = config.timeouts.drain.as_secs();
    assert!(pause >= 2, "a pause long enough for the endpoints to go");
    assert!(
        grace > pause + drain,
        "grace {grace} s must cover the preStop pause {pause} s + drain {drain} s and the exit"
    );
}

#[tokio::test]
async fn the_probes_name_paths_and_a_port_alb_answers_on() {
    let _cpu = crate::support::cpu::shared().await;
    let docs = documents();
    let (text, config) = (configmap_text(&docs), configmap_config(&docs));
    let alb = find(&docs, "Deployment", "alb");
    let c = container(alb);
    let admin_port = config.admin.listen.expect("admin listener on").port();
    let mut paths = Vec::new();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = get["port"].as_str().expect("probe port by name");
        assert_eq!(port_named(c, port), u64::from(admin_port), "{probe} port");
        paths.push(path);
    }
    assert_eq!(port_named(c, "http"), u64::from(config.listen.port()));
    let service = find(&docs, "Service", "alb");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");

    // The ConfigMap's own config, moved to loopback port 0 with a live backend: both paths 200.
    let backend = TestBackend::start("backend").await;
    let local = text
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("0.0.0.0:9090", "127.0.0.1:0")
        .replace("http://backend:8081", &backend.url());
    let lb = TestBalancer::start(&local).await;
    for path in paths {
        let (status, _, body) = get(&client(), &lb.admin_url(path).await).await;
        assert_eq!(status, 200, "{path}: {body:?}");
    }
    lb.stop().await;
    backend.stop().await;
}

#[test]
fn the_pods_are_replicated_and_locked_down() {
    let docs = documents();
    let alb = find(&docs, "Deployment", "alb");
    assert!(alb["spec"]["replicas"].as_u64() >= Some(2));
    let labels = &alb["spec"]["template"]["metadata"]["labels"];
    let pdb = find(&docs, "PodDisruptionBudget", "alb");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&find(&docs, "Service", "alb")["spec"]["selector"], labels);
    for name in ["alb", "backend"] {
        let deployment = find(&docs, "Deployment", name);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        // A numeric user: the image's `nonroot` is a name the kubelet cannot check.
        assert!(
            pod["securityContext"]["runAsUser"].as_u64() > Some(0),
            "{name}"
        );
        let c = container(deployment);
        assert_eq!(c["image"], "alb:latest", "{name}");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{name}");
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][resource].is_string(),
                    "{name}: resources.{kind}.{resource}"
                );
            }
        }
    }
}

#[test]
fn alb_may_read_endpointslices_and_nothing_else() {
    let docs = documents();
    let account = find(&docs, "ServiceAccount", "alb");
    assert_eq!(
        account["automountServiceAccountToken"], false,
        "mounted where asked"
    );
    let pod = &find(&docs, "Deployment", "alb")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "alb");
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "alb reads its token"
    );
    let role = find(&docs, "Role", "alb-endpointslice-reader");
    assert_eq!(
        role["rules"],
        serde_json::json!([{
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }])
    );
    let binding = find(&docs, "RoleBinding", "alb-endpointslice-reader");
    assert_eq!(
        binding["roleRef"],
        serde_json::json!({
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "alb-endpointslice-reader",
        })
    );
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "alb"}])
    );
    let cluster_wide = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding")
        .count();
    assert_eq!(cluster_wide, 0, "no rights beyond the namespace");
    let backend = &find(&docs, "Deployment", "backend")["spec"]["template"]["spec"];
    assert_eq!(
        backend["automountServiceAccountToken"], false,
        "the backends get no token"
    );
}
