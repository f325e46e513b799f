//! The Docker engine as the tests drive it: the compose command this machine has, a project
//! (one stack, its own name, so nothing clashes with anything else on the engine) and a guard that
//! takes the stack down whatever the test's outcome. Every command has a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `program args`, failing the test past `within`. The output is read while the program
/// runs (a full pipe would stall it).
pub fn run(program: &str, args: &[&str], envs: &[(&str, String)], within: Duration) -> Output {
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let pid = child.id().to_string();
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match output.recv_timeout(within) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("{program} {args:?} took more than {within:?}");
        }
    }
}

pub fn ok(program: &str, args: &[&str], envs: &[(&str, String)], within: Duration) -> String {
    let out = run(program, args, envs, within);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The compose command: the plugin (`docker compose`) or the standalone `docker-compose`.
/// Err says why the Docker test cannot run here.
pub fn compose_command() -> Result<Vec<String>, String> {
    if !works("docker", &["info"]) {
        return Err("no Docker daemon answers `docker info`".into());
    }
    if works("docker", &["compose", "version"]) {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    if works("docker-compose", &["version"]) {
        return Ok(vec!["docker-compose".into()]);
    }
    Err("the Docker daemon answers but neither `docker compose` nor `docker-compose` runs".into())
}

/// One compose project, taken down (containers, networks, volumes) when dropped.
pub struct Stack {
    compose: Vec<String>,
    file: PathBuf,
    pub project: String,
    envs: Vec<(&'static str, String)>,
}

impl Stack {
    pub fn new(compose: &[String], file: &Path, project: &str, image: &str) -> Stack {
        Stack {
            compose: compose.to_vec(),
            file: file.to_path_buf(),
            project: project.to_string(),
            // A free host port on loopback only: nothing fixed, nothing reachable from outside.
            envs: vec![
                ("ALB_IMAGE", image.to_string()),
                ("ALB_PUBLISH", "127.0.0.1:".to_string()),
            ],
        }
    }

    /// One more variable for the compose file (and for `down` when the stack is dropped).
    pub fn with_env(mut self, name: &'static str, value: &str) -> Stack {
        self.envs.push((name, value.to_string()));
        self
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut args: Vec<&str> = self.compose[1..].iter().map(String::as_str).collect();
        args.extend([
            "-p",
            &self.project,
            "-f",
            self.file.to_str().expect("utf-8 path"),
        ]);
        args.extend(rest);
        args
    }

    /// Runs `compose -p PROJECT -f FILE rest...`, failing the test if it fails.
    pub fn compose(&self, rest: &[&str], within: Duration) -> String {
        ok(&self.compose[0], &self.args(rest), &self.envs, within)
    }

    /// The container ids of `service`.
    pub fn containers(&self, service: &str) -> Vec<String> {
        self.compose(&["ps", "-q", service], Duration::from_secs(30))
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `127.0.0.1:PORT` that alb's 8080 is published on.
    pub fn published(&self) -> String {
        self.port("alb", 8080)
    }

    /// `127.0.0.1:PORT` that `service`'s `port` is published on.
    pub fn port(&self, service: &str, port: u16) -> String {
        let out = self.compose(
            &["port", service, &port.to_string()],
            Duration::from_secs(30),
        );
        out.trim().replace("0.0.0.0", "127.0.0.1")
    }

    /// Everything `service`'s containers wrote (stdout and stderr). Read with `docker logs`: the
    /// Python `docker-compose logs` takes tens of seconds over a busy access log.
    pub fn logs(&self, service: &str) -> String {
        let mut all = String::new();
        for id in self.containers(service) {
            let out = run("docker", &["logs", &id], &[], Duration::from_secs(30));
            all.push_str(&String::from_utf8_lossy(&out.stdout));
            all.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        all
    }

    /// The network the compose file calls `name`.
    pub fn network(&self, name: &str) -> String {
        // Compose names networks PROJECT_NAME; both generations of the tool agree on that.
        format!("{}_{name}", self.project)
    }

    /// What of this project is left on the engine: containers and networks.
    pub fn leftovers(&self) -> String {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let containers = ok(
            "docker",
            &["ps", "-aq", "--filter", &label],
            &[],
            Duration::from_secs(30),
        );
        let networks = ok(
            "docker",
            &["network", "ls", "-q", "--filter", &label],
            &[],
            Duration::from_secs(30),
        );
        format!("{containers}{networks}").trim().to_string()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let args = self.args(&["down", "-v", "--remove-orphans", "-t", "5"]);
        let _ = Command::new(&self.compose[0])
            .args(&args)
            .envs(self.envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The image and its runtime base, removed when dropped.
pub struct Images(pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["rmi", "-f", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A container's address on its (one) network.
pub fn container_ip(id: &str) -> String {
    ok(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ],
        &[],
        Duration::from_secs(30),
    )
    .trim()
    .to_string()
}
