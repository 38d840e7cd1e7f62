//! The Kubernetes path (issue 2): over containerd's CRI service, a pod sandbox with host
//! networking (the locally imported pause image) and a busybox container in it, with a
//! `vigil.dev/*` pod annotation that `pod_annotations` allow-lists for the vigil runtime.
//! The annotation reaches the shim's bundle, both containers share one shim process, and
//! stopping and removing the pod cleans everything up.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use vigil_integration::containerd::CRI_NAMESPACE;
use vigil_integration::cri::{Cri, PodSpec};
use vigil_integration::{procs, Image, Runtime};

use crate::check::{self, hang};
use crate::runner::{Case, Env};

/// The CRI cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::each("cri/pod_with_annotation_shares_shim", pod).with_images(&[]),
        Case::vigil("cri/pod_learns_then_enforces", pod_guarded).with_images(&[]),
    ]
}

const MODE_KEY: &str = "vigil.dev/mode";

fn pod(env: &Env) -> Result<()> {
    for image in [Image::Pause, Image::Busybox] {
        env.c.import_into(image, CRI_NAMESPACE)?;
    }
    let mut cri = Cri::connect(env.c.cri_socket())?;
    let spec = PodSpec {
        name: env.id("pod"),
        namespace: "default".into(),
        annotations: HashMap::from([(MODE_KEY.to_string(), "off".to_string())]),
        cgroup_parent: format!("/{}", env.c.namespace()),
        log_directory: env.c.dir().join("pod-logs"),
    };
    let handler = env.rt.cri_handler();
    let pod_id = cri.run_pod(&spec, handler)?;
    let image = format!("docker.io/{}", Image::Busybox.name());
    let ctr_id = cri.create_container(&pod_id, &spec, "app", &image, &["sleep", "600"])?;
    cri.start_container(&ctr_id)?;
    let running = check::wait_until(hang(2), || {
        cri.container_state(&ctr_id)
            .is_ok_and(|s| s == k8s_cri::v1::ContainerState::ContainerRunning)
    });
    ensure!(
        running,
        "container {ctr_id} never reached CONTAINER_RUNNING"
    );

    annotation_reaches_bundle(env, &pod_id, &ctr_id)?;
    one_shim(env, &pod_id, &ctr_id)?;

    cri.stop_container(&ctr_id, 2)?;
    cri.remove_container(&ctr_id)?;
    cri.stop_pod(&pod_id)?;
    cri.remove_pod(&pod_id)?;
    ensure!(
        cri.list_containers()?.is_empty(),
        "CRI still lists containers"
    );
    ensure!(cri.list_pods()?.is_empty(), "CRI still lists pods");
    let clean = check::wait_until(hang(2), || env.c.leftovers().is_empty());
    ensure!(
        clean,
        "left behind after the pod was removed: {:?}",
        env.c.leftovers()
    );
    Ok(())
}

/// The bundles the shim reads hold the pod annotation (CRI passes allow-listed pod
/// annotations to the vigil runtime only) and the sandbox id that groups them.
fn annotation_reaches_bundle(env: &Env, pod_id: &str, ctr_id: &str) -> Result<()> {
    for id in [pod_id, ctr_id] {
        let path = env.c.bundle(CRI_NAMESPACE, id).join("config.json");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let spec: serde_json::Value = serde_json::from_str(&text)?;
        let annotations = &spec["annotations"];
        let mode = annotations[MODE_KEY].as_str();
        match env.rt {
            Runtime::Vigil => ensure!(
                mode == Some("off"),
                "{MODE_KEY} did not reach {}: {annotations}",
                path.display()
            ),
            // The runc runtime has no pod_annotations: CRI must not pass it.
            Runtime::Runc => ensure!(mode.is_none(), "{MODE_KEY} passed to runc: {annotations}"),
        }
        let sandbox = annotations["io.kubernetes.cri.sandbox-id"].as_str();
        ensure!(
            sandbox == Some(pod_id),
            "{id}: sandbox-id annotation {sandbox:?}"
        );
    }
    Ok(())
}

/// The pause container and the app container have one shim for their parent, and that is
/// the only shim of this containerd.
fn one_shim(env: &Env, pod_id: &str, ctr_id: &str) -> Result<()> {
    let out = env
        .c
        .ctr_ns(CRI_NAMESPACE, &["task", "ls"], None, check::CTR)?
        .ok()?;
    let tasks = vigil_integration::ctr::parse_task_ls(&out.stdout);
    let parent = |id: &str| -> Result<i32> {
        let task = tasks
            .iter()
            .find(|t| t.id == id)
            .with_context(|| format!("no task {id}"))?;
        procs::ppid(task.pid).with_context(|| format!("parent of {id}'s pid {}", task.pid))
    };
    let (a, b) = (parent(pod_id)?, parent(ctr_id)?);
    ensure!(a == b, "sandbox served by shim {a}, container by shim {b}");
    let shims = procs::shims_of(env.c.socket());
    ensure!(
        shims == vec![a],
        "shims of this containerd: {shims:?}, expected only {a}"
    );
    let exe = std::fs::read_link(format!("/proc/{a}/exe"))?;
    let expected = match env.rt {
        Runtime::Vigil => "containerd-shim-vigil-v2",
        Runtime::Runc => "containerd-shim-runc-v2",
    };
    ensure!(
        exe.ends_with(expected),
        "shim {a} runs {}, not {expected}",
        exe.display()
    );
    Ok(())
}

/// The guard on the Kubernetes path: a pod annotated `learn` gives its image (CRI's
/// `docker.io/...` name, resolved in the `k8s.io` namespace) a profile while its sandbox
/// container stays unguarded; a second pod annotated `enforce` runs the same command
/// cleanly and has a read it never learned blocked, the event naming the Kubernetes
/// namespace, pod and container.
fn pod_guarded(env: &Env) -> Result<()> {
    for image in [Image::Pause, Image::Busybox] {
        env.c.import_into(image, CRI_NAMESPACE)?;
    }
    let mut cri = Cri::connect(env.c.cri_socket())?;
    let image = format!("docker.io/{}", Image::Busybox.name());
    let learned = ["sh", "-c", "cat /etc/passwd >/dev/null; echo learned; true"];
    run_pod_once(env, &mut cri, "learn", &image, &learned)?;

    let profiles = super::guard::vigil(env, &["profile", "list", "--json"])?.ok()?;
    ensure!(
        profiles.stdout.contains(&image),
        "no profile names {image}: {}",
        profiles.stdout
    );
    ensure!(
        !profiles.stdout.contains(Image::Pause.name()),
        "the sandbox (pause) container was learned: {}",
        profiles.stdout
    );
    let quiet = super::guard::audit(env)?;
    ensure!(
        quiet.is_empty(),
        "learning wrote audit events: {}",
        super::guard::show_events(&quiet)
    );

    let attack = [
        "sh",
        "-c",
        "cat /etc/passwd >/dev/null; echo learned; cat /etc/shadow; true",
    ];
    let (pod_name, ctr_id) = run_pod_once(env, &mut cri, "enforce", &image, &attack)?;
    let events = super::guard::events_since(env, 0, 1)?;
    ensure!(
        events.len() == 1,
        "expected one event (the /etc/shadow read), got: {}",
        super::guard::show_events(&events)
    );
    let ev = &events[0];
    let field = |k: &str| super::guard::field_str(ev, k).to_string();
    for (key, want) in [
        ("container.id", ctr_id.as_str()),
        ("container.name", "app"),
        ("k8s.ns.name", "default"),
        ("k8s.pod.name", pod_name.as_str()),
        ("fd.name", "/etc/shadow"),
        ("vigil.mode", "enforce"),
        ("vigil.action", "blocked"),
    ] {
        ensure!(
            field(key) == want,
            "{key} is {:?}, want {want:?}: {}",
            field(key),
            super::guard::show_events(&events)
        );
    }
    ensure!(
        field("container.image.repository") == image,
        "image {:?}, want {image}",
        field("container.image.repository")
    );
    Ok(())
}

/// Runs `command` as container `app` in a new pod annotated `vigil.dev/mode: mode`, waits
/// for it to exit, removes the container and the pod; returns (pod name, container id).
fn run_pod_once(
    env: &Env,
    cri: &mut Cri,
    mode: &str,
    image: &str,
    command: &[&str],
) -> Result<(String, String)> {
    let spec = PodSpec {
        name: env.id(mode),
        namespace: "default".into(),
        annotations: HashMap::from([(MODE_KEY.to_string(), mode.to_string())]),
        cgroup_parent: format!("/{}", env.c.namespace()),
        log_directory: env.c.dir().join("pod-logs"),
    };
    let pod_id = cri.run_pod(&spec, env.rt.cri_handler())?;
    let ctr_id = cri.create_container(&pod_id, &spec, "app", image, command)?;
    cri.start_container(&ctr_id)?;
    let exited = check::wait_until(hang(5), || {
        cri.container_state(&ctr_id)
            .is_ok_and(|s| s == k8s_cri::v1::ContainerState::ContainerExited)
    });
    ensure!(exited, "{mode} container {ctr_id} never exited");
    cri.remove_container(&ctr_id)?;
    cri.stop_pod(&pod_id)?;
    cri.remove_pod(&pod_id)?;
    Ok((spec.name, ctr_id))
}
