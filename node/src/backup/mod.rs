//! Backups (issue 14): where copies are kept. More parts (snapshots, the WAL archive,
//! restore) build on [`store`].

pub mod store;
