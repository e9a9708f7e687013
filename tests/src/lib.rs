//! Harnesses shared by the end-to-end tests: the lab (network-namespace nodes with real sshd,
//! stub tools and etcd) and a real nats-server with JetStream.

pub mod helm;
pub mod lab;
pub mod nats;
pub mod records;

use std::path::{Path, PathBuf};

/// `target/<profile>/NAME`: the built binaries, next to the running test's `deps` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, as the README's test command does)",
        path.display()
    );
    path
}
