//! End-to-end tests that run the real pieces together (issue #6).
//!
//! A placeholder in the workspace until its issue lands; it builds on `shared`.
