//! A cluster of nodes, sans-IO: which node owns which part of the
//! presentities, and how ownership moves between nodes.
//!
//! Presentities fall into a fixed number of partitions by the same
//! fixed-seed hash the shards route by ([`partition`]). Each partition has
//! one owner at a time: a lease in a replicated key-value store with a
//! time to live (NATS JetStream KV), taken by compare-and-set and kept by
//! renewing it ([`ownership`]). Which node *should* own a partition is
//! a rendezvous hash over the live nodes ([`placement`]), so that adding
//! or losing a node moves only the partitions that must move. The shards
//! read who owns what, and where each node listens, from a [`view`].
//!
//! Nothing here does I/O. A host (the reactor's cluster thread, or the
//! simulation in `tests/sim_cluster.rs`) carries the machine's requests
//! to the store and the log and feeds back their answers and the time.
//! The consensus is the store's: this layer writes no replication or
//! membership protocol of its own, only the client's side of leases and
//! fencing.

pub mod log_queues;
pub mod mail;
pub mod ownership;
pub mod partition;
pub mod placement;
pub mod replication;
pub mod view;
pub mod warm;

/// A node of the cluster, as configured (`[cluster] node`).
pub type NodeId = u32;
