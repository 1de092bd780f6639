//! What a node finds in its store after a restart.

use keel_raft_store::{open, Identity};
use openraft::storage::RaftLogStorage;
use openraft::Vote;

#[tokio::test]
async fn a_leaders_vote_comes_back_as_a_candidates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = Identity {
        cluster: "reopen".into(),
        node_id: 1,
    };
    {
        let mut store = open(dir.path(), &identity).expect("open store").log_store;
        store.save_vote(&Vote::new_committed(7, 1)).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new_committed(7, 1)));
    }
    let mut store = open(dir.path(), &identity).expect("reopen store").log_store;
    // Same term and choice, so it still votes for no one else in term 7, but it must win a
    // new term before it leads again.
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(7, 1)));
}
