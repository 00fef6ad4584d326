//! compose_invoke (to be written).
