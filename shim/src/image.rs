//! Which image a container runs: its name, for people, and its config digest (the image ID),
//! which keys the container's profile. Both come from containerd's metadata services over
//! containerd's gRPC socket (the shim's `-address`): the container record gives the image name
//! unless CRI's `io.kubernetes.cri.image-name` annotation already does, the image record gives
//! the target descriptor, and the manifest (chosen from an index by the host's platform) read
//! from the content store gives the config descriptor.
//!
//! The shim calls this while containerd waits on the shim's Create; these are read-only
//! metadata calls, which containerd serves meanwhile. A deadline bounds the whole resolution so
//! that a stuck containerd cannot hang Create.

use std::future::Future;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::metadata::{Ascii, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{self, Code, Status};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::time::Instant;

/// The annotation in which CRI names a container's image.
pub const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// How long a whole resolution may take before it gives up.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The gRPC header that carries the containerd namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Largest manifest or index read (the OCI distribution spec's limit for manifests).
const MAX_DOCUMENT: usize = 4 << 20;

/// How many indexes may nest above a manifest.
const MAX_DEPTH: usize = 4;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A container's image: the name it was created from and its config digest (the image ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The image name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The image config's digest, `sha256:<hex>`: what `ctr images ls`/`crictl images` call
    /// the image ID.
    pub config_digest: String,
}

/// Why a container's image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "containerd namespace {namespace:?} cannot be sent as a grpc header; pass the namespace \
         containerd gave the shim"
    )]
    BadNamespace { namespace: String },
    #[error(
        "connect to containerd at {address}: {source}; check that containerd runs and that the \
         shim's -address names its grpc socket"
    )]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "containerd at {address} gave no answer within {}ms while {step} in namespace \
         {namespace}; check that containerd is responsive",
        RESOLVE_TIMEOUT.as_millis()
    )]
    Timeout {
        address: String,
        namespace: String,
        step: String,
    },
    #[error(
        "containerd at {address} failed {step} in namespace {namespace}: {status}; check \
         containerd's log"
    )]
    Rpc {
        address: String,
        namespace: String,
        step: String,
        status: Box<Status>,
    },
    #[error(
        "no container {container_id} in containerd namespace {namespace} at {address}; the \
         container must exist before its task is created"
    )]
    NoContainer {
        address: String,
        namespace: String,
        container_id: String,
    },
    #[error(
        "container {container_id} in containerd namespace {namespace} names no image; create it \
         from an image or give the {CRI_IMAGE_NAME} annotation"
    )]
    NoImageName {
        namespace: String,
        container_id: String,
    },
    #[error(
        "no image {image} in containerd namespace {namespace} at {address}; pull or import it \
         (`ctr -n {namespace} images ls` lists what exists)"
    )]
    NoImage {
        address: String,
        namespace: String,
        image: String,
    },
    #[error(
        "blob {digest} of image {image} is not in containerd's content store (namespace \
         {namespace}); pull the image again for this platform"
    )]
    MissingBlob {
        namespace: String,
        image: String,
        digest: String,
    },
    #[error("blob {digest} of image {image} {reason}; pull the image again")]
    BadBlob {
        image: String,
        digest: String,
        reason: String,
    },
    #[error(
        "image {image} has no manifest for platform {platform} (it offers: {offered}); use an \
         image built for {platform}"
    )]
    NoPlatform {
        image: String,
        platform: String,
        offered: String,
    },
}

/// Resolves the image of container `container_id` in `namespace` through the containerd whose
/// gRPC socket is `address`. `cri_image_name` (the value of [`CRI_IMAGE_NAME`], when present)
/// spares the container lookup; when containerd has no image of that name, the container's own
/// image field is used instead.
pub async fn resolve_image(
    address: &str,
    namespace: &str,
    container_id: &str,
    cri_image_name: Option<&str>,
) -> Result<ImageRef, ImageError> {
    let session = Session::connect(address, namespace).await?;
    let (name, target) = match cri_image_name.filter(|n| !n.is_empty()) {
        Some(name) => match session.image_target(name).await {
            Err(ImageError::NoImage { .. }) => session.container_image(container_id).await?,
            found => (name.to_string(), found?),
        },
        None => session.container_image(container_id).await?,
    };
    let config_digest = session.config_digest(&name, target).await?;
    Ok(ImageRef {
        name,
        config_digest,
    })
}

/// An OCI descriptor, as in manifests and indexes and as containerd's image target.
#[derive(Debug, Clone, Default, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: String,
}

/// A manifest or an index: whichever fields the document has.
#[derive(Debug, Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
}

/// One resolution: a connection, the namespace header, and the deadline all calls share.
struct Session {
    channel: Channel,
    address: String,
    namespace: String,
    header: MetadataValue<Ascii>,
    deadline: Instant,
}

impl Session {
    async fn connect(address: &str, namespace: &str) -> Result<Session, ImageError> {
        let deadline = Instant::now() + RESOLVE_TIMEOUT;
        let header = namespace
            .parse::<MetadataValue<Ascii>>()
            .ok()
            .filter(|_| !namespace.is_empty())
            .ok_or_else(|| ImageError::BadNamespace {
                namespace: namespace.to_string(),
            })?;
        let path = address.strip_prefix("unix://").unwrap_or(address);
        let connected = tokio::time::timeout_at(deadline, containerd_client::connect(path)).await;
        let channel = match connected {
            Err(_) => return Err(timeout(address, namespace, "connecting")),
            Ok(result) => result.map_err(|source| ImageError::Connect {
                address: address.to_string(),
                source,
            })?,
        };
        Ok(Session {
            channel,
            address: address.to_string(),
            namespace: namespace.to_string(),
            header,
            deadline,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.header.clone());
        request
    }

    /// Runs one call within the deadline; `NotFound` becomes `not_found()`.
    async fn call<T>(
        &self,
        step: &str,
        call: impl Future<Output = Result<T, Status>>,
        not_found: impl FnOnce() -> ImageError,
    ) -> Result<T, ImageError> {
        match tokio::time::timeout_at(self.deadline, call).await {
            Err(_) => Err(timeout(&self.address, &self.namespace, step)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(status)) if status.code() == Code::NotFound => Err(not_found()),
            Ok(Err(status)) => Err(ImageError::Rpc {
                address: self.address.clone(),
                namespace: self.namespace.clone(),
                step: step.to_string(),
                status: Box::new(status),
            }),
        }
    }

    /// The container's image name and that image's target.
    async fn container_image(&self, id: &str) -> Result<(String, Descriptor), ImageError> {
        let step = format!("reading container {id}");
        let mut client = ContainersClient::new(self.channel.clone());
        let request = self.request(GetContainerRequest { id: id.to_string() });
        let response = self
            .call(&step, client.get(request), || ImageError::NoContainer {
                address: self.address.clone(),
                namespace: self.namespace.clone(),
                container_id: id.to_string(),
            })
            .await?;
        let name = response
            .into_inner()
            .container
            .map(|c| c.image)
            .filter(|image| !image.is_empty())
            .ok_or_else(|| ImageError::NoImageName {
                namespace: self.namespace.clone(),
                container_id: id.to_string(),
            })?;
        let target = self.image_target(&name).await?;
        Ok((name, target))
    }

    /// The descriptor an image record points at: a manifest or an index.
    async fn image_target(&self, name: &str) -> Result<Descriptor, ImageError> {
        let step = format!("reading image {name}");
        let mut client = ImagesClient::new(self.channel.clone());
        let request = self.request(GetImageRequest {
            name: name.to_string(),
        });
        let no_image = || ImageError::NoImage {
            address: self.address.clone(),
            namespace: self.namespace.clone(),
            image: name.to_string(),
        };
        let response = self.call(&step, client.get(request), no_image).await?;
        let target = response.into_inner().image.and_then(|i| i.target);
        let target = target
            .filter(|t| !t.digest.is_empty())
            .ok_or_else(no_image)?;
        Ok(Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: target.size,
            platform: None,
        })
    }

    /// Follows indexes down to the host platform's manifest and returns its config digest.
    async fn config_digest(&self, image: &str, target: Descriptor) -> Result<String, ImageError> {
        let mut descriptor = target;
        for _ in 0..=MAX_DEPTH {
            let blob = self.read_blob(image, &descriptor).await?;
            let document: Document = serde_json::from_slice(&blob)
                .map_err(|e| bad_blob(image, &descriptor.digest, format!("is not json: {e}")))?;
            match document_kind(&descriptor, &document) {
                Kind::Index => descriptor = select_manifest(image, document)?,
                Kind::Manifest => return manifest_config(image, &descriptor.digest, document),
                Kind::Unknown(kind) => {
                    let reason = format!("has unsupported media type {kind:?}");
                    return Err(bad_blob(image, &descriptor.digest, reason));
                }
            }
        }
        let reason = format!("is below more than {MAX_DEPTH} nested indexes");
        Err(bad_blob(image, &descriptor.digest, reason))
    }

    /// Reads a manifest or index from the content store and checks it against its digest.
    async fn read_blob(&self, image: &str, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let digest = descriptor.digest.as_str();
        if descriptor.size > MAX_DOCUMENT as i64 {
            let reason = format!(
                "is {} bytes, over the {MAX_DOCUMENT} allowed",
                descriptor.size
            );
            return Err(bad_blob(image, digest, reason));
        }
        let step = format!("reading blob {digest} of image {image}");
        let mut client = ContentClient::new(self.channel.clone());
        let request = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: descriptor.size.max(0),
        });
        let read = async {
            let mut stream = client.read(request).await?.into_inner();
            let mut data = Vec::new();
            while let Some(chunk) = stream.message().await? {
                data.extend_from_slice(&chunk.data);
                if data.len() > MAX_DOCUMENT {
                    break;
                }
            }
            Ok(data)
        };
        let missing = || ImageError::MissingBlob {
            namespace: self.namespace.clone(),
            image: image.to_string(),
            digest: digest.to_string(),
        };
        let data = self.call(&step, read, missing).await?;
        check_blob(digest, descriptor.size, &data).map_err(|r| bad_blob(image, digest, r))?;
        Ok(data)
    }
}

fn timeout(address: &str, namespace: &str, step: &str) -> ImageError {
    ImageError::Timeout {
        address: address.to_string(),
        namespace: namespace.to_string(),
        step: step.to_string(),
    }
}

fn bad_blob(image: &str, digest: &str, reason: String) -> ImageError {
    ImageError::BadBlob {
        image: image.to_string(),
        digest: digest.to_string(),
        reason,
    }
}

/// Checks a blob's length against its descriptor and its content against its digest.
fn check_blob(digest: &str, size: i64, data: &[u8]) -> Result<(), String> {
    if data.len() > MAX_DOCUMENT {
        return Err(format!("is over the {MAX_DOCUMENT} bytes allowed"));
    }
    if size > 0 && data.len() as i64 != size {
        return Err(format!(
            "has {} bytes where {size} were expected",
            data.len()
        ));
    }
    let (algorithm, expected) = split_digest(digest)?;
    let actual = match algorithm {
        "sha256" => hex(&Sha256::digest(data)),
        "sha384" => hex(&Sha384::digest(data)),
        "sha512" => hex(&Sha512::digest(data)),
        other => return Err(format!("uses unsupported digest algorithm {other:?}")),
    };
    if actual != expected {
        return Err(format!(
            "does not match its digest (content hashes to {algorithm}:{actual})"
        ));
    }
    Ok(())
}

/// Splits `algorithm:hex` after checking its shape.
fn split_digest(digest: &str) -> Result<(&str, &str), String> {
    let malformed = || format!("has a malformed digest {digest:?}");
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(malformed)?;
    let hex_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if algorithm.is_empty() || !hex_ok {
        return Err(malformed());
    }
    Ok((algorithm, encoded))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

enum Kind {
    Index,
    Manifest,
    Unknown(String),
}

/// What a document is: by the descriptor's media type, else the document's own, else by shape.
fn document_kind(descriptor: &Descriptor, document: &Document) -> Kind {
    for media_type in [&descriptor.media_type, &document.media_type] {
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => return Kind::Index,
            OCI_MANIFEST | DOCKER_MANIFEST => return Kind::Manifest,
            _ => {}
        }
    }
    match (&document.manifests, &document.config) {
        (Some(_), None) => Kind::Index,
        (None, Some(_)) => Kind::Manifest,
        _ if !descriptor.media_type.is_empty() => Kind::Unknown(descriptor.media_type.clone()),
        _ => Kind::Unknown(document.media_type.clone()),
    }
}

fn manifest_config(image: &str, digest: &str, document: Document) -> Result<String, ImageError> {
    let config = document
        .config
        .ok_or_else(|| bad_blob(image, digest, "is a manifest without a config".to_string()))?;
    split_digest(&config.digest).map_err(|r| {
        let reason = format!("names a config that {r}");
        bad_blob(image, digest, reason)
    })?;
    Ok(config.digest)
}

/// The host platform in OCI terms: `(os, architecture, variant)`.
pub fn host_platform() -> (&'static str, &'static str, &'static str) {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    ("linux", architecture, "")
}

/// Whether an index entry's platform suits the host, as containerd's default matcher decides:
/// same os and architecture, same variant once normalised (`arm64/v8` is `arm64`). A 32-bit
/// arm host accepts every arm variant.
fn platform_matches(platform: &Platform) -> bool {
    let (os, architecture, variant) = host_platform();
    let wanted_variant = match (platform.architecture.as_str(), platform.variant.as_str()) {
        ("arm64", "v8") => "",
        (_, v) => v,
    };
    platform.os == os
        && platform.architecture == architecture
        && (architecture == "arm" || wanted_variant == variant)
}

/// Picks the host's manifest from an index: the first entry whose platform matches, else the
/// first entry without a platform (containerd's order of preference).
fn select_manifest(image: &str, index: Document) -> Result<Descriptor, ImageError> {
    let manifests = index.manifests.unwrap_or_default();
    let matching = manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(platform_matches));
    let chosen = matching.or_else(|| manifests.iter().find(|m| m.platform.is_none()));
    if let Some(chosen) = chosen {
        return Ok(chosen.clone());
    }
    let (os, architecture, variant) = host_platform();
    let platform = [os, architecture, variant]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    Err(ImageError::NoPlatform {
        image: image.to_string(),
        platform,
        offered: offered_platforms(&manifests),
    })
}

fn offered_platforms(manifests: &[Descriptor]) -> String {
    let offered: Vec<String> = manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .map(|p| {
            let parts = [p.os.as_str(), &p.architecture, &p.variant];
            parts
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    if offered.is_empty() {
        "none".to_string()
    } else {
        offered.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, platform: Option<(&str, &str, &str)>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.to_string(),
            digest: digest.to_string(),
            size: 1,
            platform: platform.map(|(os, architecture, variant)| Platform {
                os: os.to_string(),
                architecture: architecture.to_string(),
                variant: variant.to_string(),
            }),
        }
    }

    fn index(manifests: Vec<Descriptor>) -> Document {
        Document {
            media_type: OCI_INDEX.to_string(),
            manifests: Some(manifests),
            config: None,
        }
    }

    fn foreign_arch() -> &'static str {
        if host_platform().1 == "amd64" {
            "arm64"
        } else {
            "amd64"
        }
    }

    #[test]
    fn index_picks_the_host_platform_not_the_first_entry() {
        let host = host_platform().1;
        let doc = index(vec![
            entry("sha256:aa", Some(("linux", foreign_arch(), ""))),
            entry("sha256:bb", Some(("windows", host, ""))),
            entry("sha256:cc", Some(("linux", host, ""))),
        ]);
        assert_eq!(select_manifest("img", doc).unwrap().digest, "sha256:cc");
    }

    #[test]
    fn index_without_a_matching_platform_names_what_it_offers() {
        let doc = index(vec![
            entry("sha256:aa", Some(("linux", foreign_arch(), ""))),
            entry("sha256:bb", Some(("linux", "s390x", ""))),
        ]);
        let err = select_manifest("docker.io/x/y:1", doc)
            .unwrap_err()
            .to_string();
        assert!(err.contains("docker.io/x/y:1"), "{err}");
        assert!(err.contains(&format!("linux/{}", foreign_arch())), "{err}");
        assert!(err.contains("linux/s390x"), "{err}");
        assert!(
            err.contains(&format!("platform linux/{}", host_platform().1)),
            "{err}"
        );
    }

    #[test]
    fn index_falls_back_to_an_entry_without_platform() {
        let doc = index(vec![
            entry("sha256:aa", Some(("linux", foreign_arch(), ""))),
            entry("sha256:bb", None),
        ]);
        assert_eq!(select_manifest("img", doc).unwrap().digest, "sha256:bb");
    }

    #[test]
    fn arm64_v8_is_arm64() {
        let p = |variant: &str| Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: variant.into(),
        };
        let on_arm64 = host_platform().1 == "arm64";
        assert_eq!(platform_matches(&p("v8")), on_arm64);
        assert_eq!(platform_matches(&p("")), on_arm64);
    }

    #[test]
    fn blob_check_catches_a_wrong_digest_and_size() {
        let data = b"{}";
        let good = format!("sha256:{}", hex(&Sha256::digest(data)));
        assert!(check_blob(&good, 2, data).is_ok());
        assert!(check_blob(&good, 0, data).is_ok());
        assert!(check_blob(&good, 3, data)
            .unwrap_err()
            .contains("3 were expected"));
        let wrong = format!("sha256:{}", hex(&Sha256::digest(b"other")));
        assert!(check_blob(&wrong, 2, data)
            .unwrap_err()
            .contains("does not match"));
        assert!(check_blob("md5:abcd", 2, data)
            .unwrap_err()
            .contains("unsupported"));
        assert!(check_blob("sha256:XYZ", 2, data)
            .unwrap_err()
            .contains("malformed"));
    }

    #[test]
    fn kind_comes_from_media_type_then_shape() {
        let bare = |json: &str| serde_json::from_str::<Document>(json).unwrap();
        let untyped = Descriptor::default();
        let doc = bare(r#"{"manifests":[]}"#);
        assert!(matches!(document_kind(&untyped, &doc), Kind::Index));
        let doc = bare(r#"{"config":{"digest":"sha256:ab"}}"#);
        assert!(matches!(document_kind(&untyped, &doc), Kind::Manifest));
        let schema1 = Descriptor {
            media_type: "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            ..Descriptor::default()
        };
        let doc = bare(r#"{"fsLayers":[]}"#);
        assert!(matches!(document_kind(&schema1, &doc), Kind::Unknown(t) if t.contains("v1")));
    }

    #[tokio::test]
    async fn a_missing_socket_fails_at_connect_and_names_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let sock = sock.to_str().unwrap();
        let err = resolve_image(sock, "default", "c1", None)
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(sock), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_naming_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("silent.sock");
        // Accepts connections and never answers: the HTTP/2 handshake cannot complete.
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let err = resolve_image(sock.to_str().unwrap(), "k8s.io", "c1", None)
            .await
            .unwrap_err();
        keep.abort();
        assert!(started.elapsed() < RESOLVE_TIMEOUT + Duration::from_secs(2));
        assert!(matches!(err, ImageError::Timeout { .. }), "{err:?}");
        eprintln!("{err}");
        assert!(err.to_string().contains("k8s.io"), "{err}");
    }

    #[tokio::test]
    async fn a_namespace_that_is_no_header_is_refused() {
        let err = resolve_image("/nonexistent.sock", "bad\nns", "c1", None)
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::BadNamespace { .. }), "{err:?}");
    }
}
