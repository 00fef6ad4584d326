//! `renet compose`: finds the compose files, learns compose's model, vets it, allocates slots,
//! writes the override file and hands over to docker compose on the repo's daemon.

pub mod command;
pub mod files;
pub mod interpolation;
pub mod invoke;
pub mod model;
pub mod rewrite;
pub mod slots;
pub mod vetting;
