//! The podrestore node agent.
pub mod archive;
pub mod criu;
pub mod namespaces;
pub mod sandbox;
pub mod service;
pub mod sys;
