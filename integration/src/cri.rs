//! A blocking CRI (v1) client on containerd's gRPC socket, for the Kubernetes-path tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// A connected CRI runtime service client with its own tokio runtime.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// What a pod needs that the test chooses.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Pod name (also the uid's base).
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod annotations (`vigil.dev/mode`, ...).
    pub annotations: HashMap<String, String>,
    /// cgroupfs parent of the pod (`/NAME`), so teardown finds it.
    pub cgroup_parent: String,
    /// Where CRI writes container logs.
    pub log_directory: PathBuf,
}

impl Cri {
    /// Connects to the CRI service on `socket`.
    pub fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::try_from("http://[::]:50051")?
                    .connect_timeout(Duration::from_secs(10))
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .with_context(|| format!("connect to the CRI service on {}", socket.display()))?;
        Ok(Cri {
            rt,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// `RunPodSandbox` with host networking and runtime handler `handler`; returns the pod id.
    pub fn run_pod(&mut self, spec: &PodSpec, handler: &str) -> Result<String> {
        let request = cri::RunPodSandboxRequest {
            config: Some(pod_config(spec)),
            runtime_handler: handler.to_string(),
        };
        let response = self
            .rt
            .block_on(self.client.run_pod_sandbox(request))
            .with_context(|| format!("RunPodSandbox {} with handler {handler}", spec.name))?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    /// `CreateContainer` of `image` running `command` in pod `pod_id`; returns its id.
    pub fn create_container(
        &mut self,
        pod_id: &str,
        spec: &PodSpec,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config(spec)),
        };
        let response = self
            .rt
            .block_on(self.client.create_container(request))
            .with_context(|| format!("CreateContainer {name} in pod {pod_id}"))?;
        Ok(response.into_inner().container_id)
    }

    /// `StartContainer`.
    pub fn start_container(&mut self, id: &str) -> Result<()> {
        let request = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.rt
            .block_on(self.client.start_container(request))
            .with_context(|| format!("StartContainer {id}"))?;
        Ok(())
    }

    /// `StopContainer` with a grace period of `timeout_secs`.
    pub fn stop_container(&mut self, id: &str, timeout_secs: i64) -> Result<()> {
        let request = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_secs,
        };
        self.rt
            .block_on(self.client.stop_container(request))
            .with_context(|| format!("StopContainer {id}"))?;
        Ok(())
    }

    /// `RemoveContainer`.
    pub fn remove_container(&mut self, id: &str) -> Result<()> {
        let request = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.rt
            .block_on(self.client.remove_container(request))
            .with_context(|| format!("RemoveContainer {id}"))?;
        Ok(())
    }

    /// `StopPodSandbox`.
    pub fn stop_pod(&mut self, id: &str) -> Result<()> {
        let request = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.rt
            .block_on(self.client.stop_pod_sandbox(request))
            .with_context(|| format!("StopPodSandbox {id}"))?;
        Ok(())
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod(&mut self, id: &str) -> Result<()> {
        let request = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.rt
            .block_on(self.client.remove_pod_sandbox(request))
            .with_context(|| format!("RemovePodSandbox {id}"))?;
        Ok(())
    }

    /// The container's state (`CONTAINER_RUNNING`, ...).
    pub fn container_state(&mut self, id: &str) -> Result<cri::ContainerState> {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let status = self
            .rt
            .block_on(self.client.container_status(request))
            .with_context(|| format!("ContainerStatus {id}"))?
            .into_inner()
            .status
            .with_context(|| format!("ContainerStatus {id} has no status"))?;
        Ok(status.state())
    }

    /// Ids of every container CRI lists.
    pub fn list_containers(&mut self) -> Result<Vec<String>> {
        let request = cri::ListContainersRequest { filter: None };
        let list = self
            .rt
            .block_on(self.client.list_containers(request))
            .context("ListContainers")?;
        Ok(list
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Ids of every pod sandbox CRI lists.
    pub fn list_pods(&mut self) -> Result<Vec<String>> {
        let request = cri::ListPodSandboxRequest { filter: None };
        let list = self
            .rt
            .block_on(self.client.list_pod_sandbox(request))
            .context("ListPodSandbox")?;
        Ok(list.into_inner().items.into_iter().map(|p| p.id).collect())
    }
}

fn pod_config(spec: &PodSpec) -> cri::PodSandboxConfig {
    let namespace_options = cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        ..Default::default()
    };
    let security = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options),
        ..Default::default()
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: spec.name.clone(),
            uid: format!("{}-uid", spec.name),
            namespace: spec.namespace.clone(),
            attempt: 0,
        }),
        // Host networking shares the node's UTS namespace: runc refuses a hostname then.
        hostname: String::new(),
        log_directory: spec.log_directory.to_string_lossy().into_owned(),
        annotations: spec.annotations.clone(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: spec.cgroup_parent.clone(),
            security_context: Some(security),
            ..Default::default()
        }),
        ..Default::default()
    }
}
