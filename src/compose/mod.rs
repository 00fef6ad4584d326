//! `renet compose`: finds the compose files, asks compose for its resolved model, vets it,
//! allocates slots, writes the final model and the hosts file and hands over to docker
//! compose on the repo's daemon.

pub mod command;
pub mod files;
pub mod hosts;
pub mod invoke;
pub mod model;
pub mod resolved;
pub mod rewrite;
pub mod slots;
pub mod vetting;
