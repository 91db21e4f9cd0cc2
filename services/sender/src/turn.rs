//! Whether a send command is still its workflow's turn.

use uuid::Uuid;

/// `version` and `current` are the workflow record's `v` and `c` fields:
/// `c` is `{version} {message}`, the message whose send is current as of
/// that version, with no message once the workflow ended. It says nothing
/// when absent (the record predates it, or is gone: a status for a gone
/// record changes nothing anyway) or when written at another version than
/// the record's (a service of the version before wrote the record since,
/// without `c`, during a rolling upgrade); then the send goes ahead, as it
/// did before senders checked.
pub fn is_current(version: Option<&str>, current: Option<&str>, message: Uuid) -> bool {
    let Some((at, current)) = current.and_then(|c| c.split_once(' ')) else {
        return true;
    };
    if version != Some(at) {
        return true;
    }
    current.parse::<Uuid>().is_ok_and(|c| c == message)
}

#[cfg(test)]
mod tests {
    use super::is_current;
    use uuid::Uuid;

    #[test]
    fn only_the_current_message_is_sent() {
        let message = Uuid::new_v4();
        let c = format!("3 {message}");
        assert!(is_current(Some("3"), Some(&c), message));
        let other = format!("3 {}", Uuid::new_v4());
        assert!(!is_current(Some("3"), Some(&other), message));
        assert!(
            !is_current(Some("3"), Some("3 "), message),
            "the workflow ended"
        );
    }

    #[test]
    fn a_mark_that_cannot_be_trusted_lets_the_send_go() {
        let message = Uuid::new_v4();
        let other = format!("3 {}", Uuid::new_v4());
        assert!(is_current(None, None, message), "no record");
        assert!(
            is_current(Some("2"), None, message),
            "a record from before the check"
        );
        assert!(
            is_current(Some("4"), Some(&other), message),
            "written since by a service that knows no mark"
        );
    }
}
