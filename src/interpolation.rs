//! interpolation (to be written).
