//! Whether a send command is still its workflow's turn.

use uuid::Uuid;

/// `current` is the workflow record's `c` field: the message whose send
/// is current, empty once the workflow ended, absent when the record
/// predates the field or is gone (then the send goes ahead, as it did
/// before senders checked; a status for a gone record changes nothing).
pub fn is_current(current: Option<&str>, message: Uuid) -> bool {
    match current {
        None => true,
        Some(current) => current.parse::<Uuid>().is_ok_and(|c| c == message),
    }
}

#[cfg(test)]
mod tests {
    use super::is_current;
    use uuid::Uuid;

    #[test]
    fn only_the_current_message_is_sent() {
        let message = Uuid::new_v4();
        assert!(is_current(Some(&message.to_string()), message));
        assert!(!is_current(Some(&Uuid::new_v4().to_string()), message));
        assert!(!is_current(Some(""), message), "the workflow ended");
        assert!(is_current(None, message), "a record from before the check");
    }
}
