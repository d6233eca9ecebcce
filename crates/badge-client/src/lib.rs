//! badge-client: the one client of a badge (or any Kubernetes) API server that badge's
//! own programs use: the agent, the `badge` subcommands that call a server, and the test
//! kit. It reads a kubeconfig as kubectl does ([`kubeconfig`]), connects over rustls with
//! a CA or (for discovery only) without one, presents a bearer token or a client
//! certificate, sends JSON requests whose errors carry the server's Status ([`Status`]),
//! and streams watches as line-delimited JSON events ([`watch`]).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
pub mod kubeconfig;
mod status;
mod tls;
pub mod watch;

pub use client::{Client, Identity, WatchEvents};
pub use kubeconfig::{ClientConfig, Kubeconfig, Trust};
pub use status::{Error, Status, error_text};
