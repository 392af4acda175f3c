//! The Mercure front end: a Mercure hub (protocol 1.0, and 0.x with `--mercure-legacy`) on pgsse's log,
//! hub and JWT keys, so that every update reaches subscribers on every gateway and resumes exactly.

mod claims;
mod error;
mod request;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::api::stream::{Cadence, Sent, SseBody};
use crate::auth::jwt::{bearer_header, cookie, Lenient, NO_EXP};
use crate::auth::{Access, Auth, AuthError, Grant, Jwt};
use crate::fanout::hub::Hub;
use crate::fanout::update::hub_id;
use crate::fanout::update::{Interest, TableTopic};
use crate::filter::Filter;
use crate::pg::published::{ColumnsError, Published};
use crate::pg::store::{NewUpdate, Store};
pub use claims::Rights;
pub use error::MercureError;
pub use request::{Publish, Subscribe};

/// The cookie a 1.0 subscriber's token comes in, and the one 0.x clients use.
pub const COOKIE: &str = "__Secure-mercure_access_token";
pub const LEGACY_COOKIE: &str = "mercureAuthorization";

/// Where a subscriber's token may come from, as a refusal names them.
const TOKEN_PLACES: &str = "Authorization: Bearer or the __Secure-mercure_access_token cookie";
const LEGACY_TOKEN_PLACES: &str =
    "Authorization: Bearer, ?authorization=, or the __Secure-mercure_access_token or mercureAuthorization cookie";

/// The Mercure hub at `/.well-known/mercure`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Mercure")]
pub struct MercureArgs {
    /// Serve a Mercure hub at /.well-known/mercure (needs --auth jwt, whose key verifies Mercure tokens).
    #[arg(long, env = "PGSSE_MERCURE")]
    pub mercure: bool,

    /// Mercure subscribers without a token receive public updates (private ones never).
    #[arg(long, env = "PGSSE_MERCURE_ANONYMOUS")]
    pub mercure_anonymous: bool,

    /// Also speak Mercure 0.x: topic= selectors (URI templates), the mercure claim, ?authorization=, the
    /// mercureAuthorization cookie, lastEventID= and the Last-Event-ID response header.
    #[arg(long, env = "PGSSE_MERCURE_LEGACY")]
    pub mercure_legacy: bool,

    /// With --mercure-legacy: accept 0.x tokens without exp. Such a token never ends: anyone who holds
    /// one keeps its rights until the key changes.
    #[arg(long, env = "PGSSE_JWT_EXP_OPTIONAL")]
    pub jwt_exp_optional: bool,
}

impl MercureArgs {
    /// Why the flags cannot be served, if they cannot: one line for the command line's refusal.
    pub fn check(&self, jwt: bool) -> Result<(), String> {
        let needs = |flag: &str, set: bool, on: bool, needed: &str| {
            if set && !on {
                Err(format!("{flag} needs {needed}"))
            } else {
                Ok(())
            }
        };
        needs("--mercure", self.mercure, jwt, "--auth jwt: the same key verifies Mercure tokens")?;
        needs("--mercure-anonymous", self.mercure_anonymous, self.mercure, "--mercure")?;
        needs("--mercure-legacy", self.mercure_legacy, self.mercure, "--mercure")?;
        needs("--jwt-exp-optional", self.jwt_exp_optional, self.mercure_legacy, "--mercure-legacy (0.x tokens only)")
    }
}

/// Who a request is: a token's rights and end, or an anonymous subscriber.
pub struct Caller {
    pub rights: Rights,
    pub expires: Option<SystemTime>,
}

/// What the hub's requests need: the log, the hub, the key, and the streams' settings.
pub struct Mercure {
    store: Arc<Store>,
    published: Arc<Published>,
    hub: Arc<Hub>,
    auth: Arc<Auth>,
    args: MercureArgs,
    cadence: Arc<Cadence>,
    sent: Arc<Sent>,
    /// Cancelled on shutdown: ends every replay.
    shutdown: CancellationToken,
}

impl Mercure {
    pub fn new(
        (store, published, hub, auth): (Arc<Store>, Arc<Published>, Arc<Hub>, Arc<Auth>),
        args: MercureArgs,
        (cadence, sent): (Arc<Cadence>, Arc<Sent>),
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self { store, published, hub, auth, args, cadence, sent, shutdown })
    }

    pub fn legacy(&self) -> bool {
        self.args.mercure_legacy
    }

    fn jwt(&self) -> Result<&Jwt, MercureError> {
        match &*self.auth {
            Auth::Jwt(jwt) => Ok(jwt),
            _ => Err(MercureError::Missing(TOKEN_PLACES)),
        }
    }

    /// The caller of a request: its token from the `Authorization` header, else (0.x) the `authorization`
    /// parameter, else, where `cookies` allows, a cookie. `None` without a token.
    pub fn caller(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        cookies: bool,
    ) -> Result<Option<Caller>, MercureError> {
        let legacy = self.args.mercure_legacy;
        let from_cookie = |name: &str| cookie(headers, name).filter(|_| cookies);
        let token = match bearer_header(headers).map_err(|()| MercureError::Presentation)? {
            Some(token) => Some(token),
            None => query_token
                .filter(|_| legacy)
                .or_else(|| from_cookie(COOKIE))
                .or_else(|| from_cookie(LEGACY_COOKIE).filter(|_| legacy)),
        };
        let Some(token) = token else { return Ok(None) };
        let exp_optional = legacy && self.args.jwt_exp_optional;
        // 0.x hubs never checked aud or iss, so 0.x publishers' tokens carry neither; checked where present.
        let lenient = Lenient { exp: exp_optional, audience: legacy };
        let verified = self.jwt()?.verify::<claims::Claims>(token, lenient).map_err(|err| match err {
            AuthError::Invalid(why) if legacy && !exp_optional && why == NO_EXP => {
                AuthError::Invalid(format!("{why} (a 0.x token without one is accepted only with --jwt-exp-optional)"))
            }
            err => err,
        })?;
        if let Some(claim) = verified.lacks.filter(|_| !verified.claims.is_legacy()) {
            return Err(AuthError::Invalid(format!("it has no {claim} claim")).into());
        }
        let rights = verified.claims.rights(verified.typ.as_deref(), verified.expires.is_some(), legacy)?;
        Ok(Some(Caller { rights, expires: verified.expires }))
    }

    /// Publishes `update` for `caller`, whose token must allow every one of its topics; answers the id
    /// its subscribers see.
    pub async fn publish(&self, caller: Option<Caller>, update: Publish) -> Result<String, MercureError> {
        let caller = caller.ok_or(MercureError::PublishToken)?;
        if let Some(topic) = update.reserved_topic() {
            return Err(MercureError::Reserved(crate::parse::clip(topic)));
        }
        if let Some(topic) = update.topics.iter().find(|t| !caller.rights.publish.iter().any(|s| s.matches(t))) {
            return Err(MercureError::Publish(crate::parse::clip(topic)));
        }
        let new = NewUpdate {
            topics: &update.topics,
            data: &update.data,
            private: update.private,
            id: update.id.as_deref(),
            kind: update.kind.as_deref(),
            retry: update.retry,
        };
        let id = self.store.publish_update(&new).await?;
        Ok(update.id.unwrap_or_else(|| hub_id(id)))
    }

    /// The row filters of pgsse's own grant for each table channel with a topic (of `channels`, those that
    /// carry updates), as a native stream of the channel would apply them. A channel the grant does not let
    /// its holder subscribe to is left out, so none of its rows pass; a filter no row of its channel can
    /// match is refused, as on a native stream.
    async fn grant_filters(
        &self,
        grant: Grant,
        channels: &[(String, Option<TableTopic>)],
    ) -> Result<HashMap<String, Option<Arc<Filter>>>, MercureError> {
        let access = Access::Granted { grant, expires: None, subject: None };
        let mut filters = HashMap::new();
        for (channel, topic) in channels {
            let channel = channel.clone();
            if topic.is_none() || access.may_subscribe(&channel).is_err() {
                continue;
            }
            let filter = access.filter_for(&channel, None)?;
            if let Some(filter) = &filter {
                self.published.check(&self.store, &channel, filter).await.map_err(|err| match err {
                    ColumnsError::Unknown { .. } | ColumnsError::Type(_) => {
                        AuthError::GrantFilter { channel: channel.clone(), cause: err.to_string() }.into()
                    }
                    ColumnsError::Store(err) => MercureError::Store(err),
                })?;
            }
            filters.insert(channel, filter);
        }
        Ok(filters)
    }

    /// Opens a subscription: anonymous callers only where `--mercure-anonymous` allows. Returns the body
    /// and, where the request named a last event id, where the stream starts (the response's
    /// `Mercure-Last-Event-ID`).
    pub async fn subscribe(
        &self,
        caller: Option<Caller>,
        request: Subscribe,
        header_id: Option<String>,
    ) -> Result<(SseBody, Option<String>), MercureError> {
        if caller.is_none() && !self.args.mercure_anonymous {
            let places = if self.args.mercure_legacy { LEGACY_TOKEN_PLACES } else { TOKEN_PLACES };
            return Err(MercureError::Missing(places));
        }
        let (rights, expires) = match caller {
            Some(caller) => (caller.rights, caller.expires),
            None => (Rights::default(), None),
        };
        let last = header_id.or(request.last_event_id);
        // Read once for both that need it: a grant's filters, and a resume's read of the log. Each read is
        // boxed, like the native stream's: every opening subscription would otherwise carry their room.
        let channels = match rights.grant.is_some() || last.is_some() {
            true => Box::pin(self.store.update_channels()).await?,
            false => Vec::new(),
        };
        let filters = match rights.grant {
            Some(grant) => Some(Box::pin(self.grant_filters(grant, &channels)).await?),
            None => None,
        };
        let interest = Arc::new(Interest { selectors: request.selectors, grants: rights.subscribe, filters });
        stream::open(self, interest, last, channels, expires).await
    }
}
