//! traefik_labels (to be written).
