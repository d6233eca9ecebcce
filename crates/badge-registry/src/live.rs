//! The live IssuedTokens of each ServiceAccount, kept by the watch cache on every event of
//! an IssuedToken record: a flush or a recount reads one account's count instead of every
//! record of its namespace. A record counts as [`crate::identity::count_live_tokens`]
//! counts it: it carries the ServiceAccount label, and its `spec.expiresAt` is later than
//! the time asked about (or absent, or unreadable). Expiries are kept rather than counts,
//! so a record past its expiry stops counting at once, before the controller removes it.

use std::collections::{BTreeMap, HashMap};

use crate::cache::CachedObject;

/// Where IssuedTokens are stored (`resources` identity.badge.dev/v1 issuedtokens).
pub(crate) const ISSUEDTOKENS_PREFIX: &str = "/registry/issuedtokens/";

/// The namespace of an IssuedToken's key.
fn namespace_of(key: &str) -> Option<&str> {
    key.strip_prefix(ISSUEDTOKENS_PREFIX)?
        .split_once('/')
        .map(|(ns, _)| ns)
}

/// One ServiceAccount's records.
#[derive(Default, Debug)]
struct AccountTokens {
    /// Records that never expire (legacy tokens) or whose expiry cannot be read.
    unexpiring: u32,
    /// How many records expire at each instant: the tokens of one burst share an entry.
    expiring: BTreeMap<jiff::Timestamp, u32>,
}

impl AccountTokens {
    fn is_empty(&self) -> bool {
        self.unexpiring == 0 && self.expiring.is_empty()
    }
}

/// What one record adds to its account's count.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LiveToken {
    namespace: Box<str>,
    account: Box<str>,
    expires: Option<jiff::Timestamp>,
}

impl LiveToken {
    /// What the record `json` stored at `key` counts for, if anything.
    pub(crate) fn of_json(key: &str, json: &[u8]) -> Option<LiveToken> {
        let namespace = namespace_of(key)?;
        let (account, expires) = crate::identity::live_token_fields(json)?;
        Some(LiveToken {
            namespace: namespace.into(),
            account: account.into(),
            expires,
        })
    }

    /// What the record `json` stored at `key` counts for, its expiry when it is a bound
    /// token's record (see [`crate::CacheEvent::bound_token_expiry`]), and whether it is
    /// revoked, read in one pass.
    pub(crate) fn read(
        key: &str,
        json: &[u8],
    ) -> (Option<LiveToken>, Option<Option<jiff::Timestamp>>, Option<bool>) {
        if namespace_of(key).is_none() {
            return (None, None, None);
        }
        match crate::identity::token_view(json) {
            Some(view) => LiveToken::of_view(key, view),
            None => (None, None, None),
        }
    }

    /// [`LiveToken::read`] given the record's view, read already.
    pub(crate) fn of_view(
        key: &str,
        view: crate::identity::TokenView<'_>,
    ) -> (Option<LiveToken>, Option<Option<jiff::Timestamp>>, Option<bool>) {
        let Some(namespace) = namespace_of(key) else {
            return (None, None, None);
        };
        let expires = view.expires_at.as_deref().and_then(badge_api::meta::parse_time);
        let bound_expiry = (!view.legacy()).then_some(expires);
        let live = view.service_account.map(|account| LiveToken {
            namespace: namespace.into(),
            account: account.into(),
            expires,
        });
        (live, bound_expiry, Some(view.revoked))
    }

    /// What a cached record counts for.
    pub(crate) fn of_cached(key: &str, object: &CachedObject) -> Option<LiveToken> {
        if !key.starts_with(ISSUEDTOKENS_PREFIX) {
            return None;
        }
        object.with_json(|json| LiveToken::of_json(key, json))
    }
}

/// Every account's records, by namespace and account.
#[derive(Default, Debug)]
pub(crate) struct LiveTokens {
    accounts: HashMap<Box<str>, HashMap<Box<str>, AccountTokens>>,
}

impl LiveTokens {
    /// Counts a record.
    pub(crate) fn add(&mut self, token: LiveToken) {
        let account = self
            .accounts
            .entry(token.namespace)
            .or_default()
            .entry(token.account)
            .or_default();
        match token.expires {
            None => account.unexpiring += 1,
            Some(at) => *account.expiring.entry(at).or_default() += 1,
        }
    }

    /// Stops counting a record that was counted.
    pub(crate) fn remove(&mut self, token: &LiveToken) {
        let Some(accounts) = self.accounts.get_mut(&token.namespace) else {
            return;
        };
        let Some(account) = accounts.get_mut(&token.account) else {
            return;
        };
        match token.expires {
            None => account.unexpiring = account.unexpiring.saturating_sub(1),
            Some(at) => {
                if let Some(n) = account.expiring.get_mut(&at) {
                    *n -= 1;
                    if *n == 0 {
                        account.expiring.remove(&at);
                    }
                }
            }
        }
        if account.is_empty() {
            accounts.remove(&token.account);
            if accounts.is_empty() {
                self.accounts.remove(&token.namespace);
            }
        }
    }

    /// How many records of `account` in `namespace` are live at `now`.
    pub(crate) fn count(&self, namespace: &str, account: &str, now: jiff::Timestamp) -> i64 {
        let Some(tokens) = self.accounts.get(namespace).and_then(|a| a.get(account)) else {
            return 0;
        };
        let expiring: u64 = tokens
            .expiring
            .range((std::ops::Bound::Excluded(now), std::ops::Bound::Unbounded))
            .map(|(_, n)| u64::from(*n))
            .sum();
        i64::try_from(expiring + u64::from(tokens.unexpiring)).unwrap_or(i64::MAX)
    }

    /// Every account of `namespace` with a record live at `now`, with its count.
    pub(crate) fn counts_in(&self, namespace: &str, now: jiff::Timestamp) -> HashMap<String, i64> {
        self.accounts
            .get(namespace)
            .into_iter()
            .flat_map(|accounts| accounts.keys())
            .filter_map(|account| {
                let live = self.count(namespace, account, now);
                (live > 0).then(|| (account.to_string(), live))
            })
            .collect()
    }
}
