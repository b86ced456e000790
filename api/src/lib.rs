//! Skiff object model.
