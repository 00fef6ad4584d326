//! http_api (to be written).
