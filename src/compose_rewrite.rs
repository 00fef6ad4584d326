//! compose_rewrite (to be written).
