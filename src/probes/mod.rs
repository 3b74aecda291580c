//! Probes on files and hooks on the kernel: attaching them (`attach`), owning every link
//! for the life of the tracer and detaching them all (`registry`), and closing links,
//! fast or in the background (`release`).

pub mod attach;
pub mod registry;
mod release;

pub use attach::Scope;
pub use registry::{Origin, Registry};
