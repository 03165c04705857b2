//! Eddy's API types: the job plan ([`plan::Pipeline`]) shared by `eddy run` and the operator,
//! and, with the `k8s` feature, the `StreamJob` custom resource whose `spec.pipeline` is that
//! same type.

pub mod plan;

#[cfg(feature = "k8s")]
mod streamjob;
#[cfg(feature = "k8s")]
pub use streamjob::*;
