//! `keel.host.v1` enums to and from the control plane's types: the one place
//! the wire numbering of task actions and task states is known.

use keel_proto::host::{TaskAction as WireAction, TaskState as WireState};
use keel_raft_store::TaskAction;

/// The wire value of an action.
pub fn action_to_wire(a: TaskAction) -> i32 {
    let w = match a {
        TaskAction::Provision => WireAction::Provision,
        TaskAction::Start => WireAction::Start,
        TaskAction::Check => WireAction::Check,
        TaskAction::Restart => WireAction::Restart,
        TaskAction::Configure => WireAction::Configure,
        TaskAction::Stop => WireAction::Stop,
        TaskAction::Destroy => WireAction::Destroy,
        TaskAction::SetPassword => WireAction::SetPassword,
        TaskAction::SetAccess => WireAction::SetAccess,
        TaskAction::Snapshot => WireAction::Snapshot,
        TaskAction::Restore => WireAction::Restore,
        TaskAction::DeleteBackup => WireAction::DeleteBackup,
        TaskAction::CopyBackup => WireAction::CopyBackup,
        TaskAction::Fence => WireAction::Fence,
        TaskAction::PrepareStandby => WireAction::PrepareStandby,
        TaskAction::BuildStandby => WireAction::BuildStandby,
        TaskAction::SyncStandby => WireAction::SyncStandby,
        TaskAction::Promote => WireAction::Promote,
        TaskAction::Checkpoint => WireAction::Checkpoint,
    };
    w as i32
}

/// The action a wire value names, if any.
pub fn action_from_wire(v: i32) -> Option<TaskAction> {
    TaskAction::ALL.into_iter().find(|a| action_to_wire(*a) == v)
}

/// The wire state of a reply (`TaskState` as an `i32`).
pub fn state_from_wire(v: i32) -> WireState {
    WireState::try_from(v).unwrap_or(WireState::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_and_unknown_values_are_refused() {
        for a in TaskAction::ALL {
            assert_eq!(action_from_wire(action_to_wire(a)), Some(a));
        }
        assert_eq!(action_from_wire(0), None, "unspecified is not an action");
        assert_eq!(action_from_wire(99), None);
    }
}
