//! Backups (issue 14): the stores ([`store`], [`stores`]), what tasks carry ([`work`]),
//! WAL naming ([`wal`]), the continuous WAL archive a host runs per instance
//! ([`archive`]), fetching what a restore replays ([`fetch`]), and long tasks'
//! progress ([`progress`]).

pub mod archive;
pub mod fetch;
pub mod progress;
pub mod relay;
pub mod store;
pub mod stores;
pub mod wal;
pub mod work;
