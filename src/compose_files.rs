//! compose_files (to be written).
