//! Cluster PKI.
