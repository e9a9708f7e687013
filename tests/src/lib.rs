//! Harnesses shared by the end-to-end tests: the lab (network-namespace nodes with real sshd,
//! stub tools and etcd) and a real nats-server with JetStream.

pub mod lab;
pub mod nats;
