//! End-to-end tests: the real `ferry` binary, real files, emulators over
//! real HTTP. One binary so the suite links once.

mod bad_input;
mod bulk;
mod file_share;
mod incremental;
mod resume;
mod sharepoint;
mod sign_in;
mod structure;
mod throttling;
