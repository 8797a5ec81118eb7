//! The Edgeward edge Worker (issue #5).
//!
//! A placeholder in the workspace until its issue lands; it builds on `shared`.
