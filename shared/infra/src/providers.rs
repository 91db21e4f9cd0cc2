//! Which provider serves a channel of an account or application, stored
//! in Redis with its credentials encrypted ([`crate::crypto`]).
//!
//! - `providers:{scope}` is a hash channel → sealed [`ProviderSettings`]
//!   JSON; `scope` is the application id or the account's api key. The
//!   sender reads the application's, then the account's, then falls back
//!   to the configuration's `providers` (or the simulator).
//! - `provider-route:{route}` says whose a route is. Every stored record
//!   gets a random route, which names it in its callback URLs
//!   (`/callbacks/{kind}/{route}`): a callback is verified with that
//!   record's credentials, and inbound messages go to that record's
//!   account and application.
//!
//! Credentials are never logged ([`ProviderSettings`]'s `Debug` omits
//! them) and never returned by the API ([`Redacted`]).

use std::collections::BTreeMap;

use dispatch_model::Channel;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{ProviderKind, ProviderSettings};
use crate::crypto::CredentialsKey;
use crate::redis::{Keys, Redis};

/// Whose settings: an account, or one of its applications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<Uuid>,
}

impl Owner {
    /// The Redis scope: the application id, else the api key.
    pub fn scope(&self) -> String {
        self.application_id
            .map_or_else(|| self.account.clone(), |a| a.to_string())
    }
}

/// What a route names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTarget {
    pub owner: Owner,
    pub channel: Channel,
}

/// Settings as the API shows them: credential names, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redacted {
    pub channel: Channel,
    pub kind: ProviderKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    pub credentials: Vec<String>,
    pub templates: BTreeMap<String, String>,
    /// Where this provider must send receipts and inbound messages.
    pub callback_url: String,
}

impl Redacted {
    pub fn new(channel: Channel, settings: &ProviderSettings, callback_base: &str) -> Self {
        let mut credentials: Vec<String> = settings.credentials.keys().cloned().collect();
        if !settings.secret.is_empty() {
            credentials.push("secret".into());
        }
        Self {
            channel,
            kind: settings.kind,
            url: settings.url.clone(),
            credentials,
            templates: settings.templates.clone(),
            callback_url: callback_url(callback_base, settings),
        }
    }
}

/// The provider record that carries a message, as named in the keys that
/// match its receipts (`provider:{scope}:{id}`): `{kind}:{route}` for a
/// stored record or the configuration's (`default-{channel}`), and
/// `simulator` for the simulator, whose callbacks all come signed with
/// `simulator_secret`. A callback verified with one record's credentials
/// resolves only ids that record's sends recorded, so no account can
/// touch another's messages by naming their provider ids.
pub fn receipt_scope(settings: &ProviderSettings) -> String {
    match settings.kind {
        ProviderKind::Simulator => ProviderKind::Simulator.as_str().to_owned(),
        kind => format!("{}:{}", kind.as_str(), settings.route),
    }
}

/// Whether a record is shared by every account: the configuration's
/// (`default-{channel}` routes) and the simulator's (all its callbacks come
/// signed with one secret). Inbound messages through a shared provider go
/// to the registered owner of the number they were sent to
/// ([`number_owner`]), and to nobody when it has none.
pub fn is_shared(settings: &ProviderSettings) -> bool {
    settings.kind == ProviderKind::Simulator || settings.route.starts_with("default-")
}

/// Whose conversations and reply windows a send through `settings` by
/// `account` belongs to: the record's own for an account's record (its
/// owner is one account), the account's on a shared provider. Part of the
/// `conversation:` and `window:` keys, so that one account never opens,
/// closes or reads another's.
pub fn send_tenant(settings: &ProviderSettings, account: &str) -> String {
    if is_shared(settings) {
        account_tenant(account)
    } else {
        format!("record:{}", receipt_scope(settings))
    }
}

/// The tenant of an account on a shared provider.
pub fn account_tenant(account: &str) -> String {
    format!("account:{account}")
}

/// Who owns `number` on `channel` for inbound messages through shared
/// providers (registered by the operator: `dispatch number assign`).
pub async fn number_owner(
    redis: &Redis,
    keys: &Keys,
    channel: Channel,
    number: &str,
) -> Result<Option<Owner>, redis::RedisError> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(keys.number(channel.as_str(), number))
        .query_async(&mut redis.clone())
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Registers (or with `None`, releases) the owner of `number` on
/// `channel`.
pub async fn assign_number(
    redis: &Redis,
    keys: &Keys,
    channel: Channel,
    number: &str,
    owner: Option<&Owner>,
) -> Result<(), redis::RedisError> {
    let key = keys.number(channel.as_str(), number);
    let mut conn = redis.clone();
    match owner {
        Some(owner) => {
            let value = serde_json::to_string(owner).unwrap_or_default();
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .exec_async(&mut conn)
                .await
        }
        None => redis::cmd("DEL").arg(key).exec_async(&mut conn).await,
    }
}

/// `{base}/callbacks/{kind}/{route}`: where a provider posts receipts
/// (and, for Meta, everything); the simulator's have no route.
pub fn callback_url(callback_base: &str, settings: &ProviderSettings) -> String {
    let base = callback_base.trim_end_matches('/');
    match settings.kind {
        ProviderKind::Simulator => format!("{base}/callbacks/simulator"),
        kind => format!("{base}/callbacks/{}/{}", kind.as_str(), settings.route),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct ProviderStore {
    redis: Redis,
    keys: Keys,
    key: CredentialsKey,
}

fn slot(scope: &str, channel: Channel) -> String {
    format!("{scope}/{}", channel.as_str())
}

impl ProviderStore {
    pub fn new(redis: Redis, keys: Keys, key: CredentialsKey) -> Self {
        Self { redis, keys, key }
    }

    /// Stores `settings` for `owner`'s `channel`, keeping the record's
    /// route when it replaces one (so the callback URLs configured at the
    /// provider stay valid). Returns what was stored.
    pub async fn put(
        &self,
        owner: &Owner,
        channel: Channel,
        mut settings: ProviderSettings,
    ) -> Result<ProviderSettings, StoreError> {
        let scope = owner.scope();
        settings.route = match self.get(&scope, channel).await? {
            Some(old) if !old.route.is_empty() => old.route,
            _ => Uuid::new_v4().simple().to_string(),
        };
        let sealed = self.seal(&scope, channel, &settings);
        let target = RouteTarget {
            owner: owner.clone(),
            channel,
        };
        let mut conn = self.redis.clone();
        // Two slots of a cluster: the route first, so that a crash in
        // between leaves a route to a setting not stored, whose callbacks
        // find no credentials to be verified with.
        redis::pipe()
            .set(
                self.keys.provider_route(&settings.route),
                serde_json::to_string(&target).unwrap_or_default(),
            )
            .ignore()
            .hset(self.keys.providers(&scope), channel.as_str(), sealed)
            .ignore()
            .exec_async(&mut conn)
            .await?;
        Ok(settings)
    }

    /// Removes `owner`'s setting for `channel`; false if there was none.
    pub async fn delete(&self, owner: &Owner, channel: Channel) -> Result<bool, StoreError> {
        let scope = owner.scope();
        let Some(old) = self.get(&scope, channel).await? else {
            return Ok(false);
        };
        let mut conn = self.redis.clone();
        // The setting first (the same order as `put` leaves it in).
        redis::pipe()
            .hdel(self.keys.providers(&scope), channel.as_str())
            .ignore()
            .del(self.keys.provider_route(&old.route))
            .ignore()
            .exec_async(&mut conn)
            .await?;
        Ok(true)
    }

    /// The setting of `scope` for `channel`.
    pub async fn get(
        &self,
        scope: &str,
        channel: Channel,
    ) -> Result<Option<ProviderSettings>, StoreError> {
        let mut conn = self.redis.clone();
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.keys.providers(scope))
            .arg(channel.as_str())
            .query_async(&mut conn)
            .await?;
        Ok(raw.and_then(|raw| self.open(scope, channel, &raw)))
    }

    /// Every channel's setting of `scope`.
    pub async fn list(&self, scope: &str) -> Result<Vec<(Channel, ProviderSettings)>, StoreError> {
        let mut conn = self.redis.clone();
        let all: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.providers(scope))
            .query_async(&mut conn)
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(channel, raw)| {
                let channel = Channel::parse(&channel)?;
                Some((channel, self.open(scope, channel, &raw)?))
            })
            .collect())
    }

    /// The record a callback route names, with its owner.
    pub async fn by_route(
        &self,
        route: &str,
    ) -> Result<Option<(RouteTarget, ProviderSettings)>, StoreError> {
        let mut conn = self.redis.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.keys.provider_route(route))
            .query_async(&mut conn)
            .await?;
        let Some(target) = raw.and_then(|r| serde_json::from_str::<RouteTarget>(&r).ok()) else {
            return Ok(None);
        };
        let settings = self.get(&target.owner.scope(), target.channel).await?;
        Ok(settings
            .filter(|s| s.route == route)
            .map(|settings| (target, settings)))
    }

    /// Seals `settings` for its slot.
    pub fn seal(&self, scope: &str, channel: Channel, settings: &ProviderSettings) -> String {
        let json = serde_json::to_vec(settings).unwrap_or_default();
        self.key.seal(&slot(scope, channel), &json)
    }

    /// Opens a stored value; `None` (logged) when it cannot be read. Plain
    /// JSON, as stored before credentials were encrypted, is still read.
    pub fn open(&self, scope: &str, channel: Channel, raw: &str) -> Option<ProviderSettings> {
        let plain = if raw.trim_start().starts_with('{') {
            tracing::warn!(%channel, "provider settings stored unencrypted; store them again to encrypt them");
            raw.as_bytes().to_vec()
        } else {
            match self.key.open(&slot(scope, channel), raw) {
                Ok(plain) => plain,
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "ignoring provider settings that do not open");
                    return None;
                }
            }
        };
        match serde_json::from_slice(&plain) {
            Ok(settings) => Some(settings),
            Err(e) => {
                tracing::warn!(%channel, error = %e, "ignoring unreadable provider settings");
                None
            }
        }
    }
}
