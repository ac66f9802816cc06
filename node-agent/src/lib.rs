//! The podrestore node agent.
pub mod criu;
pub mod namespaces;
pub mod sys;
