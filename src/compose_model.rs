//! compose_model (to be written).
