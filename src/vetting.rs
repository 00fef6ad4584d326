//! vetting (to be written).
