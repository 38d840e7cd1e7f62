//! Test bench: private containerd, offline images.
