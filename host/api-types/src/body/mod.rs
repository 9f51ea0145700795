//! The typed request bodies, one file per resource, with their validation.

mod auth;
mod cluster;
mod image;
mod install;
mod plugin;
mod settings;
mod storage;
mod vm;
mod vswitch;

pub use auth::*;
pub use cluster::*;
pub use image::*;
pub use install::*;
pub use plugin::*;
pub use settings::*;
pub use storage::*;
pub use vm::*;
pub use vswitch::*;

#[cfg(test)]
mod tests;
