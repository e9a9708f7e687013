//! A simulated bare-metal cluster behind the Kubernetes API (filled in by the test-world issue).
#![forbid(unsafe_code)]
