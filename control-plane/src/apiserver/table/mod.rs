//! Server-side Table printing.
