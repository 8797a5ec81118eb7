//! The Edgeward OAuth 2 authorization server (issue #4).
//!
//! A placeholder in the workspace until its issue lands; it builds on `shared`.
