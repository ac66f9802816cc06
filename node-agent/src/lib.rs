//! The podrestore node agent.
pub mod archive;
pub mod checkpoint;
pub mod criu;
pub mod engine;
pub mod namespaces;
pub mod netlock;
pub mod procinfo;
pub mod restore;
pub mod runtime;
pub mod sandbox;
pub mod service;
pub mod sys;
pub mod workdir;
