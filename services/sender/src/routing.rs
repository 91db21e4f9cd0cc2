//! Which provider settings a send uses, and whose they are.
//!
//! A channel's provider is the application's record for that channel
//! when the send names an application and it has one, else the account's,
//! else the configuration's default (the simulator unless configured
//! otherwise). A stored record that does not open (sealed with another
//! key, unreadable) counts as absent, so the send falls through to the
//! next one instead of failing.
//!
//! Whose the settings are decides what their URL may reach: the
//! operator's configuration is trusted (it may name an egress proxy or an
//! internal gateway); a record an account set through the API goes
//! through the target guard.

use dispatch_infra::config::ProviderSettings;
use dispatch_model::envelope::SendCommand;

/// Whose provider settings a send uses, which decides what its URL may
/// reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// The configuration's: the operator's, trusted.
    Operator,
    /// A record an account set through the API: checked by the target
    /// guard.
    Account,
}

/// The scopes whose provider records a send looks up, in the order they
/// win: its application's, then its account's.
pub fn scopes(command: &SendCommand) -> Vec<String> {
    command
        .application_id
        .map(|a| a.to_string())
        .into_iter()
        .chain([command.account.clone()])
        .collect()
}

/// The settings to use: the first of the records `found` (one per scope
/// of [`scopes`], in that order) that `open(scope, raw)` can read, else
/// `default()`. Records after the one chosen are not opened.
pub fn select(
    scopes: &[String],
    found: Vec<Option<String>>,
    open: impl Fn(&str, &str) -> Option<ProviderSettings>,
    default: impl FnOnce() -> ProviderSettings,
) -> (ProviderSettings, Whose) {
    let configured = scopes
        .iter()
        .zip(found)
        .find_map(|(scope, raw)| open(scope, &raw?));
    match configured {
        Some(settings) => (settings, Whose::Account),
        None => (default(), Whose::Operator),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_infra::config::ProviderKind;
    use dispatch_model::Channel;
    use std::cell::RefCell;

    fn command(application: Option<uuid::Uuid>) -> SendCommand {
        SendCommand {
            workflow_id: uuid::Uuid::nil(),
            message_uuid: uuid::Uuid::nil(),
            channel: Channel::Sms,
            account: "acct".into(),
            application_id: application,
            message: Default::default(),
            paced: None,
        }
    }

    fn settings(kind: ProviderKind, url: &str) -> ProviderSettings {
        ProviderSettings {
            kind,
            url: url.into(),
            secret: String::new(),
            credentials: Default::default(),
            templates: Default::default(),
            route: String::new(),
        }
    }

    /// Opens `{kind} {url}`; anything else does not open.
    fn open(_scope: &str, raw: &str) -> Option<ProviderSettings> {
        let (kind, url) = raw.split_once(' ')?;
        let kind = match kind {
            "twilio" => ProviderKind::Twilio,
            "vonage" => ProviderKind::Vonage,
            _ => return None,
        };
        Some(settings(kind, url))
    }

    fn default() -> ProviderSettings {
        settings(ProviderKind::Simulator, "http://sim")
    }

    fn chosen(scopes: &[String], found: &[Option<&str>]) -> (ProviderKind, String, Whose) {
        let found = found.iter().map(|f| f.map(str::to_owned)).collect();
        let (s, whose) = select(scopes, found, open, default);
        (s.kind, s.url, whose)
    }

    #[test]
    fn the_application_is_looked_up_before_the_account() {
        let app = uuid::Uuid::new_v4();
        assert_eq!(
            scopes(&command(Some(app))),
            [app.to_string(), "acct".into()]
        );
        assert_eq!(scopes(&command(None)), ["acct".to_owned()]);
    }

    #[test]
    fn the_applications_record_wins_then_the_accounts_then_the_configuration() {
        let both = ["app".to_owned(), "acct".to_owned()];
        assert_eq!(
            chosen(
                &both,
                &[Some("twilio http://app"), Some("vonage http://acct")]
            ),
            (ProviderKind::Twilio, "http://app".into(), Whose::Account)
        );
        assert_eq!(
            chosen(&both, &[None, Some("vonage http://acct")]),
            (ProviderKind::Vonage, "http://acct".into(), Whose::Account)
        );
        assert_eq!(
            chosen(&both, &[None, None]),
            (
                ProviderKind::Simulator,
                "http://sim".into(),
                Whose::Operator
            )
        );
        let account_only = ["acct".to_owned()];
        assert_eq!(
            chosen(&account_only, &[Some("vonage http://acct")]),
            (ProviderKind::Vonage, "http://acct".into(), Whose::Account)
        );
    }

    #[test]
    fn a_record_that_does_not_open_falls_through() {
        let both = ["app".to_owned(), "acct".to_owned()];
        assert_eq!(
            chosen(
                &both,
                &[Some("sealed with another key"), Some("vonage http://acct")]
            ),
            (ProviderKind::Vonage, "http://acct".into(), Whose::Account)
        );
        assert_eq!(
            chosen(&both, &[Some("garbage"), Some("garbage")]),
            (
                ProviderKind::Simulator,
                "http://sim".into(),
                Whose::Operator
            )
        );
    }

    #[test]
    fn records_after_the_chosen_one_are_not_opened_nor_the_default_built() {
        let opened = RefCell::new(Vec::new());
        let both = ["app".to_owned(), "acct".to_owned()];
        let found = vec![
            Some("twilio http://app".to_owned()),
            Some("vonage x".to_owned()),
        ];
        let (_, whose) = select(
            &both,
            found,
            |scope, raw| {
                opened.borrow_mut().push(scope.to_owned());
                open(scope, raw)
            },
            || panic!("the default is not needed"),
        );
        assert_eq!(whose, Whose::Account);
        assert_eq!(opened.into_inner(), ["app"]);
    }
}
