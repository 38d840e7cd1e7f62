use std::collections::{BTreeMap, HashMap};

use super::*;

/// A store with an optional image profile and a fixed index of named profiles.
struct FakeStore {
    image: Option<ProfileState>,
    named: BTreeMap<&'static str, ProfileState>,
}

impl ProfileLookup for FakeStore {
    fn image_profile(&self) -> Option<ProfileState> {
        self.image
    }

    fn named_profile(&self, name: &str) -> NamedProfile {
        match self.named.get(name) {
            Some(state) => NamedProfile::Found(*state),
            None => NamedProfile::NotFound {
                available: self.named.keys().map(|k| k.to_string()).collect(),
            },
        }
    }
}

fn store(image: Option<ProfileState>) -> FakeStore {
    let named = BTreeMap::from([
        ("base", ProfileState::Stable),
        ("wip", ProfileState::Learning),
    ]);
    FakeStore { image, named }
}

fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cri(name: &str, ns: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut a = annotations(extra);
    a.insert(CRI_CONTAINER_NAME.into(), name.into());
    a.insert(CRI_POD_NAMESPACE.into(), ns.into());
    a.insert(CRI_CONTAINER_TYPE.into(), "container".into());
    a
}

fn restricted_policy() -> ModePolicy {
    let prod: ModeSet = [Mode::Monitor, Mode::Enforce].into_iter().collect();
    ModePolicy {
        namespace_modes: BTreeMap::from([("prod".to_string(), prod)]),
        profile_annotation: ProfileAnnotationRule::Namespaces(vec!["trusted".into()]),
        ..ModePolicy::default()
    }
}

/// Name, annotations, node policy, image profile state, expected mode and source.
type Case = (
    &'static str,
    HashMap<String, String>,
    ModePolicy,
    Option<ProfileState>,
    Mode,
    ModeSource,
);

#[test]
fn resolves_the_mode_from_annotations_and_defaults() {
    use ModeSource as S;
    use ProfileState::{Learning, Stable};
    let node_enforce = ModePolicy {
        default_mode: Some(Mode::Enforce),
        ..ModePolicy::default()
    };
    let cases: Vec<Case> = vec![
        (
            "no annotation, no profile",
            cri("app", "dev", &[]),
            ModePolicy::default(),
            None,
            Mode::Learn,
            S::ProfileState,
        ),
        (
            "no annotation, learning profile",
            cri("app", "dev", &[]),
            ModePolicy::default(),
            Some(Learning),
            Mode::Learn,
            S::ProfileState,
        ),
        (
            "no annotation, stable profile",
            cri("app", "dev", &[]),
            ModePolicy::default(),
            Some(Stable),
            Mode::Monitor,
            S::ProfileState,
        ),
        (
            "node default wins over profile state",
            cri("app", "dev", &[]),
            node_enforce.clone(),
            None,
            Mode::Enforce,
            S::NodeDefault,
        ),
        (
            "pod annotation",
            cri("app", "dev", &[(MODE_KEY, "enforce")]),
            node_enforce.clone(),
            None,
            Mode::Enforce,
            S::PodAnnotation,
        ),
        (
            "pod annotation off",
            cri("app", "dev", &[(MODE_KEY, "off")]),
            ModePolicy::default(),
            Some(Stable),
            Mode::Off,
            S::PodAnnotation,
        ),
        (
            "container key wins",
            cri(
                "app",
                "dev",
                &[(MODE_KEY, "learn"), ("vigil.dev/mode.app", "enforce")],
            ),
            ModePolicy::default(),
            None,
            Mode::Enforce,
            S::ContainerAnnotation("vigil.dev/mode.app".into()),
        ),
        (
            "other container's key ignored",
            cri(
                "app",
                "dev",
                &[(MODE_KEY, "monitor"), ("vigil.dev/mode.sidecar", "off")],
            ),
            ModePolicy::default(),
            None,
            Mode::Monitor,
            S::PodAnnotation,
        ),
        (
            "without CRI",
            annotations(&[(MODE_KEY, "monitor")]),
            ModePolicy::default(),
            None,
            Mode::Monitor,
            S::PodAnnotation,
        ),
        (
            "foreign annotations ignored",
            cri("app", "dev", &[("example.com/mode", "bogus")]),
            ModePolicy::default(),
            Some(Stable),
            Mode::Monitor,
            S::ProfileState,
        ),
        (
            "restricted namespace, allowed mode",
            cri("app", "prod", &[(MODE_KEY, "enforce")]),
            restricted_policy(),
            None,
            Mode::Enforce,
            S::PodAnnotation,
        ),
    ];
    for (name, ann, policy, image, mode, source) in cases {
        let d = resolve(&ann, &policy, &store(image)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((d.mode, &d.source), (mode, &source), "{name}");
        assert_eq!(d.profile, ProfileChoice::Image, "{name}");
        assert_eq!(d.profile_state, image, "{name}");
        assert!(!d.sandbox, "{name}");
    }
}

#[test]
fn sandbox_is_off_whatever_its_annotations_say() {
    let mut ann = cri(
        "POD",
        "prod",
        &[(MODE_KEY, "bogus"), ("vigil.dev/nope", "x")],
    );
    ann.insert(CRI_CONTAINER_TYPE.into(), "sandbox".into());
    let d = resolve(&ann, &restricted_policy(), &store(None)).expect("sandbox never fails");
    assert_eq!(d.mode, Mode::Off);
    assert_eq!(d.source, ModeSource::Sandbox);
    assert!(d.sandbox);
    assert_eq!(d.namespace.as_deref(), Some("prod"));
}

#[test]
fn invalid_annotations_name_the_key_the_value_and_the_allowed_values() {
    let cases: Vec<(&str, HashMap<String, String>, &[&str])> = vec![
        (
            "unknown value",
            cri("app", "dev", &[(MODE_KEY, "Enforce")]),
            &[
                "vigil.dev/mode",
                "\"Enforce\"",
                "learn, monitor, enforce, off",
            ],
        ),
        (
            "unknown value in another container's key",
            cri("app", "dev", &[("vigil.dev/mode.sidecar", "block")]),
            &[
                "vigil.dev/mode.sidecar",
                "\"block\"",
                "learn, monitor, enforce, off",
            ],
        ),
        (
            "unknown key",
            cri("app", "dev", &[("vigil.dev/modes", "learn")]),
            &[
                "vigil.dev/modes",
                "\"learn\"",
                "vigil.dev/mode.<container-name>",
            ],
        ),
        (
            "bad container name in key",
            cri("app", "dev", &[("vigil.dev/mode.App_1", "learn")]),
            &["vigil.dev/mode.App_1", "allowed keys"],
        ),
        (
            "empty container name",
            cri("app", "dev", &[("vigil.dev/mode.", "learn")]),
            &["\"vigil.dev/mode.\"", "allowed keys"],
        ),
        (
            "unknown profile",
            cri("app", "trusted", &[(PROFILE_KEY, "nginx")]),
            &["vigil.dev/profile", "\"nginx\"", "base, wip"],
        ),
    ];
    for (name, ann, needles) in cases {
        let err = resolve(&ann, &ModePolicy::default(), &store(None))
            .expect_err(name)
            .to_string();
        for needle in needles {
            assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
        }
    }
}

#[test]
fn the_node_config_bounds_modes_per_namespace() {
    let policy = restricted_policy();
    let ann = cri("app", "prod", &[(MODE_KEY, "off")]);
    let err = resolve(&ann, &policy, &store(None)).unwrap_err();
    assert!(
        matches!(
            err,
            ModeError::NotAllowed {
                mode: Mode::Off,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("namespace \"prod\"") && msg.contains("monitor, enforce"),
        "{msg}"
    );

    // The default is bounded too: an unprofiled image would learn, which prod forbids.
    let err = resolve(&cri("app", "prod", &[]), &policy, &store(None)).unwrap_err();
    assert!(err.to_string().contains("default (profile state)"), "{err}");

    // Other namespaces keep the node-wide set.
    let d = resolve(
        &cri("app", "dev", &[(MODE_KEY, "off")]),
        &policy,
        &store(None),
    )
    .unwrap();
    assert_eq!(d.mode, Mode::Off);
}

#[test]
fn the_profile_annotation_is_bounded_and_read_only() {
    let policy = restricted_policy();
    let with = |ns: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![(PROFILE_KEY, "wip")];
        pairs.extend_from_slice(extra);
        resolve(
            &cri("app", ns, &pairs),
            &policy,
            &store(Some(ProfileState::Stable)),
        )
    };

    let d = with("trusted", &[(MODE_KEY, "enforce")]).unwrap();
    assert_eq!(d.profile, ProfileChoice::Named("wip".into()));
    assert_eq!(d.profile_state, Some(ProfileState::Learning));

    // No mode: a named profile is compared with, never learned into.
    let d = with("trusted", &[]).unwrap();
    assert_eq!(
        (d.mode, d.source),
        (Mode::Monitor, ModeSource::ProfileState)
    );

    let err = with("trusted", &[(MODE_KEY, "learn")]).unwrap_err();
    assert!(
        matches!(err, ModeError::LearnNamedProfile { .. }),
        "{err:?}"
    );
    let err = with("dev", &[(MODE_KEY, "enforce")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("not allowed for namespace \"dev\""),
        "{err}"
    );

    let no_cri = annotations(&[(PROFILE_KEY, "base")]);
    let err = resolve(&no_cri, &policy, &store(None)).unwrap_err();
    assert!(
        err.to_string().contains("containers started without CRI"),
        "{err}"
    );
    let nobody = ModePolicy {
        profile_annotation: ProfileAnnotationRule::Nobody,
        ..ModePolicy::default()
    };
    assert!(resolve(&no_cri, &nobody, &store(None)).is_err());
    assert!(resolve(&no_cri, &ModePolicy::default(), &store(None)).is_ok());
}

#[test]
fn modes_and_sets_spell_like_the_docs() {
    for mode in Mode::ALL {
        assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
        let json = serde_json::to_string(&mode).unwrap();
        assert_eq!(json, format!("\"{mode}\""));
    }
    assert!("ENFORCE".parse::<Mode>().is_err());
    let set: ModeSet = [Mode::Off, Mode::Learn].into_iter().collect();
    assert_eq!(set.to_string(), "learn, off");
    assert_eq!(ModeSet::empty().to_string(), "none");
    assert_eq!(ModeSet::ALL.iter().count(), 4);
    assert_eq!(
        serde_json::to_string(&FailPolicy::Open).unwrap(),
        "\"open\""
    );
    assert_eq!(FailPolicy::default(), FailPolicy::Closed);
}

#[test]
fn the_policy_follows_the_node_config() {
    let text = r#"
default_mode = "monitor"
allowed_modes = ["monitor", "enforce"]
profile_annotation_namespaces = ["trusted"]

[namespaces.lab]
allowed_modes = ["learn", "off"]
"#;
    let config = crate::config::parse(std::path::Path::new("/etc/vigil/config.toml"), text)
        .expect("valid config");
    let policy = ModePolicy::from(&config);
    assert_eq!(policy.default_mode, Some(Mode::Monitor));
    assert_eq!(
        policy.allowed_for(Some("prod")).to_string(),
        "monitor, enforce"
    );
    assert_eq!(policy.allowed_for(Some("lab")).to_string(), "learn, off");
    assert_eq!(policy.allowed_for(None).to_string(), "monitor, enforce");
    assert_eq!(
        policy.profile_annotation,
        ProfileAnnotationRule::Namespaces(vec!["trusted".into()])
    );

    let nobody = crate::config::parse(
        std::path::Path::new("/c.toml"),
        "profile_annotation_namespaces = []",
    )
    .unwrap();
    assert_eq!(
        ModePolicy::from(&nobody).profile_annotation,
        ProfileAnnotationRule::Nobody
    );
    let default = ModePolicy::from(&crate::config::NodeConfig::default());
    assert_eq!(default, ModePolicy::default());
}

#[test]
fn the_store_answers_lookups() {
    use vigil_policy::{Digest, Profile, State, Store, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    let mut profile = Profile::new(digest.clone(), Timestamp::now());
    profile.body.names.insert("local/busybox:latest".into());
    profile.state = State::Stable;
    store.import(&profile).unwrap();

    let lookup = StoreLookup::new(&store, Some(&digest));
    assert_eq!(lookup.image_profile(), Some(ProfileState::Stable));
    assert_eq!(
        lookup.named_profile("local/busybox:latest"),
        NamedProfile::Found(ProfileState::Stable)
    );
    let available = vec!["local/busybox:latest".to_string()];
    assert_eq!(
        lookup.named_profile("nginx"),
        NamedProfile::NotFound { available }
    );

    let other = Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap();
    assert_eq!(StoreLookup::new(&store, Some(&other)).image_profile(), None);
    assert_eq!(StoreLookup::new(&store, None).image_profile(), None);

    // A corrupt profile resolves as absent; the fail policy hears about it from the load.
    std::fs::write(store.path_of(&digest), b"{ torn").unwrap();
    assert_eq!(lookup.image_profile(), None);
    let ann = cri("app", "dev", &[]);
    let d = resolve(&ann, &ModePolicy::default(), &lookup).unwrap();
    assert_eq!(d.mode, Mode::Learn);
}
