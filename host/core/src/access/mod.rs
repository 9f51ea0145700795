//! Access: users and their roles, API tokens, login sessions, login
//! throttling, and the audit log.
//!
//! - Users and tokens are records of the cluster store, so the same login
//!   and the same token work on every host, and a change (a revoked token,
//!   a disabled user, a new token) holds everywhere: the change's answer
//!   waits until every online member has applied it
//!   ([`Inner::sync_members`]).
//! - Passwords are stored as argon2id hashes; tokens and sessions only as
//!   the SHA-256 of their 256-bit secret ([`secret`]), so checking a token
//!   costs one hash and two in-memory reads, never argon2.
//! - Sessions live in the memory of the host that made them
//!   ([`sessions`]); failed logins are throttled per user name and per
//!   address on each host ([`throttle`]).
//! - The first start of a host that belongs to no cluster creates the user
//!   `admin` and prints one API token for it, once.
//! - The audit log is a bounded log of the store, like the event log.

mod secret;
mod sessions;
mod throttle;

use crate::errors;
use crate::events::Sequenced;
use crate::model::{kind, now_rfc3339, rfc3339, HostRecord};
use crate::{Inner, StartError};
use nasvisor_api_types::peer::Read;
use nasvisor_api_types::{
    Action, Answer, ApiTokenView, AuditEntry, AuditView, Caller, CoreError, Credential,
    CredentialKind, IntoAnswer, Login, NewTokenView, PasswordChange, Request, Role, SessionView,
    TokenCreate, UserCreate, UserUpdate, UserView,
};
use serde::{Deserialize, Serialize};
use sessions::Sessions;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use throttle::Throttle;

/// How many audit entries are kept.
pub const MAX_AUDIT: u64 = 10_000;
/// The user the first start creates.
pub const BOOTSTRAP_USER: &str = "admin";
/// The admin token hash of releases before users (`<data_dir>/<this>`):
/// taken over as a token of `admin` once, then removed.
pub const LEGACY_TOKEN_FILE: &str = "admin-token.hash";
/// How many password hashes are computed at once (argon2 takes a core and
/// 19 MiB each): more logins wait their turn.
const HASHING_AT_ONCE: usize = 2;
/// Refused requests (4xx, 5xx) of one caller audited per minute, per host.
const REFUSALS_AUDITED_PER_MINUTE: u32 = 30;
/// How long a change to users or tokens waits for each member to apply it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// A user, as stored (kind `user`, key its name).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    /// argon2id PHC string; `None` until a password is set (the bootstrap
    /// admin logs in with its token only).
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: String,
    #[serde(default)]
    pub password_changed_at: Option<String>,
    /// Moves on with every change of password, role or state: sessions
    /// made before are no longer accepted.
    #[serde(default)]
    pub generation: u64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    fn view(&self) -> UserView {
        UserView {
            name: self.name.clone(),
            role: self.role,
            disabled: self.disabled,
            password_set: self.password_hash.is_some(),
            created_at: self.created_at.clone(),
            password_changed_at: self.password_changed_at.clone(),
        }
    }
}

/// An API token, as stored (kind `token`, key the SHA-256 of its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub user: String,
    pub role: Role,
    pub created_at: String,
    pub created_by: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// `expires_at` as a Unix time, for the check of every request.
    #[serde(default)]
    pub expires_unix: Option<i64>,
}

impl TokenRecord {
    fn expired(&self, now: i64) -> bool {
        self.expires_unix.is_some_and(|t| now >= t)
    }

    fn view(&self, key: &str, now: i64) -> ApiTokenView {
        ApiTokenView {
            id: secret::token_id(key).to_string(),
            name: self.name.clone(),
            user: self.user.clone(),
            role: self.role,
            created_at: self.created_at.clone(),
            created_by: self.created_by.clone(),
            expires_at: self.expires_at.clone(),
            expired: self.expired(now),
        }
    }
}

/// One audit entry, as stored (kind `audit`, key the sequence number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: String,
    pub user: String,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub credential: Option<String>,
    pub address: String,
    pub host: String,
    pub operation: String,
    pub request: String,
    pub status: u16,
    pub result: String,
}

impl AuditRecord {
    fn view(&self) -> AuditView {
        AuditView {
            seq: self.seq,
            time: self.time.clone(),
            user: self.user.clone(),
            role: self.role,
            credential: self.credential.clone(),
            address: self.address.clone(),
            host: self.host.clone(),
            operation: self.operation.clone(),
            request: self.request.clone(),
            status: self.status,
            result: self.result.clone(),
        }
    }
}

impl Sequenced for AuditRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
}

/// This host's part of access: sessions, throttling, the hashing queue,
/// and the bootstrap token until the daemon prints it.
pub(crate) struct AccessState {
    sessions: Sessions,
    throttle: Throttle,
    hashing: tokio::sync::Semaphore,
    bootstrap: Mutex<Option<String>>,
    /// A hash checked against when the user does not exist, so that an
    /// unknown user costs the same time as a wrong password.
    decoy: OnceLock<String>,
    /// The rate of refused requests audited per caller.
    refusals: throttle::Rate,
}

impl Default for AccessState {
    fn default() -> Self {
        Self {
            sessions: Sessions::default(),
            throttle: Throttle::default(),
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
            bootstrap: Mutex::default(),
            decoy: OnceLock::new(),
            refusals: throttle::Rate::new(REFUSALS_AUDITED_PER_MINUTE, Duration::from_secs(60)),
        }
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn unauthenticated(reason: impl Into<String>) -> CoreError {
    CoreError::Unauthenticated {
        reason: reason.into(),
    }
}

fn forbidden(reason: impl Into<String>) -> CoreError {
    CoreError::Forbidden {
        reason: reason.into(),
    }
}

impl Inner {
    // ---- start ----

    /// Creates the bootstrap admin and its token on the first start of a
    /// host that belongs to no cluster, and takes over the admin token of
    /// an older release.
    pub(crate) async fn bootstrap_access(&self) -> Result<(), StartError> {
        let legacy = self.cfg.data_dir.join(LEGACY_TOKEN_FILE);
        let legacy_key = match std::fs::read_to_string(&legacy) {
            Ok(s) => {
                let k = s.trim().to_ascii_lowercase();
                if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StartError::Core(errors::invalid(
                        legacy.display().to_string(),
                        "corrupt admin token hash: expected 64 hex digits",
                    )));
                }
                Some(k)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StartError::Io {
                    path: legacy,
                    source,
                })
            }
        };
        let no_users = self.db.list::<UserRecord>(kind::USER).is_empty();
        let single = self.db.store().cluster_info().is_none();
        if no_users || legacy_key.is_some() {
            let admin = UserRecord {
                name: BOOTSTRAP_USER.into(),
                role: Role::Admin,
                password_hash: None,
                disabled: false,
                created_at: now_rfc3339(),
                password_changed_at: None,
                generation: 0,
            };
            match self
                .db
                .create(kind::USER, BOOTSTRAP_USER, &admin, "user admin")
                .await
            {
                Ok(_) | Err(CoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let token = |name: &str| TokenRecord {
            name: name.into(),
            user: BOOTSTRAP_USER.into(),
            role: Role::Admin,
            created_at: now_rfc3339(),
            created_by: format!("host {}", self.host.id),
            expires_at: None,
            expires_unix: None,
        };
        if let Some(key) = legacy_key {
            let rec = token(&format!("admin-token-of-{}", self.host.id));
            match self.db.create(kind::TOKEN, &key, &rec, "token").await {
                Ok(_) | Err(CoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if let Err(source) = std::fs::remove_file(&legacy) {
                return Err(StartError::Io {
                    path: legacy,
                    source,
                });
            }
            tracing::info!(
                "the admin token of the previous release is now an API token of user admin \
                 (token list; revoke it when no longer needed)"
            );
        } else if no_users && single {
            let secret = secret::new_secret(secret::TOKEN_PREFIX);
            self.db
                .create(
                    kind::TOKEN,
                    &secret::key(&secret),
                    &token("bootstrap"),
                    "token",
                )
                .await?;
            *crate::lock(&self.access.bootstrap) = Some(secret);
        }
        Ok(())
    }

    /// The bootstrap admin token, once: on the first start only.
    pub(crate) fn take_bootstrap_token(&self) -> Option<String> {
        crate::lock(&self.access.bootstrap).take()
    }

    // ---- every request ----

    /// Who `credential` belongs to.
    pub(crate) fn authenticate(&self, credential: Credential<'_>) -> Result<Caller, CoreError> {
        let (secret, cookie) = match credential {
            Credential::Bearer(s) => (s, false),
            Credential::Cookie(s) => (s, true),
        };
        if secret.is_empty() || secret.len() > secret::MAX_SECRET_LEN {
            return Err(unauthenticated("invalid credential"));
        }
        if secret.starts_with(secret::SESSION_PREFIX) {
            return self.session_caller(secret);
        }
        if cookie {
            return Err(unauthenticated("invalid session"));
        }
        let key = secret::key(secret);
        let (token, _) = self
            .db
            .get::<TokenRecord>(kind::TOKEN, &key)
            .ok_or_else(|| unauthenticated("invalid token"))?;
        if token.expired(unix_now()) {
            return Err(unauthenticated(format!(
                "token {} expired at {}",
                secret::token_id(&key),
                token.expires_at.as_deref().unwrap_or("?")
            )));
        }
        let user = self.active_user(&token.user)?;
        Ok(Caller {
            role: token.role.min(user.role),
            user: user.name,
            via: CredentialKind::Token,
            credential: secret::token_id(&key).to_string(),
            expires_at: token.expires_at,
            csrf: None,
        })
    }

    fn session_caller(&self, secret: &str) -> Result<Caller, CoreError> {
        let digest = secret::digest(secret);
        let session = self
            .access
            .sessions
            .touch(&digest, Instant::now())
            .ok_or_else(|| unauthenticated("session expired or unknown: log in again"))?;
        let user = self.active_user(&session.user)?;
        if user.generation != session.generation {
            self.access.sessions.remove(&digest);
            return Err(unauthenticated(
                "session ended: the user changed (password, role or state); log in again",
            ));
        }
        Ok(Caller {
            user: user.name,
            role: user.role,
            via: CredentialKind::Session,
            credential: session_id(&digest),
            expires_at: Some(session.expires_at),
            csrf: Some(session.csrf),
        })
    }

    fn active_user(&self, name: &str) -> Result<UserRecord, CoreError> {
        let (user, _) = self
            .db
            .get::<UserRecord>(kind::USER, name)
            .ok_or_else(|| unauthenticated(format!("user {name} no longer exists")))?;
        if user.disabled {
            return Err(unauthenticated(format!("user {name} is disabled")));
        }
        Ok(user)
    }

    // ---- login ----

    /// A login with a password.
    pub(crate) async fn login(
        &self,
        login: Login,
        address: IpAddr,
    ) -> Result<SessionView, CoreError> {
        if let Err(wait) = self
            .access
            .throttle
            .check(&login.user, address, Instant::now())
        {
            let secs = wait.as_secs_f64().ceil() as u64;
            return Err(CoreError::Throttled {
                reason: format!(
                    "too many failed logins for this user or from this address; try again in {secs} s"
                ),
                retry_after_s: secs.max(1),
            });
        }
        let user = self
            .db
            .get::<UserRecord>(kind::USER, &login.user)
            .map(|(u, _)| u);
        let hash = match user.as_ref().and_then(|u| u.password_hash.clone()) {
            Some(h) => h,
            None => self.decoy_hash().await?,
        };
        let ok = self.check_password(hash, login.password).await?;
        let user = match user {
            Some(u) if ok && u.password_hash.is_some() && !u.disabled => u,
            // The attempt was counted when let through.
            _ => return Err(unauthenticated("wrong user name or password")),
        };
        self.access.throttle.succeeded(&login.user, address);
        let secret = secret::new_secret(secret::SESSION_PREFIX);
        let csrf = secret::new_secret("");
        let expires_at = rfc3339(time::OffsetDateTime::now_utc() + sessions::SESSION_TTL);
        self.access.sessions.insert(
            secret::digest(&secret),
            &user.name,
            user.generation,
            csrf.clone(),
            expires_at.clone(),
            Instant::now(),
        );
        Ok(SessionView {
            token: secret,
            user: user.name,
            role: user.role,
            expires_at,
            idle_timeout_s: sessions::IDLE_TIMEOUT.as_secs(),
            csrf_token: csrf,
        })
    }

    async fn decoy_hash(&self) -> Result<String, CoreError> {
        if let Some(h) = self.access.decoy.get() {
            return Ok(h.clone());
        }
        let h = self.hash_password(secret::new_secret("")).await?;
        Ok(self.access.decoy.get_or_init(|| h).clone())
    }

    async fn check_password(&self, hash: String, password: String) -> Result<bool, CoreError> {
        let _turn = self
            .access
            .hashing
            .acquire()
            .await
            .map_err(errors::internal)?;
        tokio::task::spawn_blocking(move || secret::verify_password(&hash, &password))
            .await
            .map_err(errors::internal)
    }

    async fn hash_password(&self, password: String) -> Result<String, CoreError> {
        let _turn = self
            .access
            .hashing
            .acquire()
            .await
            .map_err(errors::internal)?;
        tokio::task::spawn_blocking(move || secret::hash_password(&password))
            .await
            .map_err(errors::internal)?
            .map_err(errors::internal)
    }

    // ---- the access actions ----

    /// Carries out one of access's actions for `req`'s caller (never
    /// routed to another host); `Err(action)` gives back any other action.
    pub(crate) async fn handle_access(
        &self,
        req: &Request,
        action: Action,
    ) -> Result<Result<Answer, CoreError>, Action> {
        let caller = &req.caller;
        Ok(match action {
            Action::Whoami => Ok(caller.view().into_answer()),
            Action::Logout => {
                if caller.via == CredentialKind::Session {
                    self.access.sessions.end_id(&caller.credential);
                    Ok(Answer::Empty)
                } else {
                    Err(errors::conflict(
                        "this request was made with an API token, not a session: revoke the \
                         token instead (token revoke)",
                    ))
                }
            }
            Action::ChangePassword(change) => self.change_password(caller, change).await,
            Action::ListUsers => Ok(self
                .db
                .list::<UserRecord>(kind::USER)
                .iter()
                .map(UserRecord::view)
                .collect::<Vec<_>>()
                .into_answer()),
            Action::CreateUser(create) => self.create_user(create).await,
            Action::UpdateUser { name, update } => self.update_user(caller, &name, update).await,
            Action::DeleteUser { name } => self.delete_user(&name).await,
            Action::ListTokens => {
                let now = unix_now();
                let all = caller.role >= Role::Admin;
                Ok(self
                    .db
                    .store()
                    .list_with(kind::TOKEN, |key, v, _| {
                        let t = TokenRecord::deserialize(v).ok()?;
                        (all || t.user == caller.user).then(|| t.view(key, now))
                    })
                    .into_answer())
            }
            Action::CreateToken(create) => self.create_token(caller, create).await,
            Action::RevokeToken { id } => self.revoke_token(caller, &id).await,
            Action::ListAudit { since, limit } => Ok(self
                .audit
                .list(&self.db, since, limit, AuditRecord::view)
                .into_answer()),
            other => return Err(other),
        })
    }

    async fn change_password(
        &self,
        caller: &Caller,
        change: PasswordChange,
    ) -> Result<Answer, CoreError> {
        let user = self.active_user(&caller.user)?;
        // A user with no password yet (the bootstrap admin) sets one with
        // its token alone.
        if let Some(hash) = user.password_hash.clone() {
            if !self.check_password(hash, change.current).await? {
                return Err(errors::invalid("current", "wrong password"));
            }
        }
        let hash = self.hash_password(change.new).await?;
        let now = now_rfc3339();
        self.db
            .update::<UserRecord, _>(kind::USER, &caller.user, |u| {
                u.password_hash = Some(hash.clone());
                u.password_changed_at = Some(now.clone());
                u.generation += 1;
                Ok(())
            })
            .await?;
        self.access.sessions.end_user(&caller.user);
        self.sync_members().await;
        Ok(Answer::Empty)
    }

    async fn create_user(&self, create: UserCreate) -> Result<Answer, CoreError> {
        if self
            .db
            .get::<UserRecord>(kind::USER, &create.name)
            .is_some()
        {
            return Err(errors::conflict(format!(
                "user {} already exists",
                create.name
            )));
        }
        let now = now_rfc3339();
        let rec = UserRecord {
            name: create.name.clone(),
            role: create.role,
            password_hash: Some(self.hash_password(create.password).await?),
            disabled: false,
            created_at: now.clone(),
            password_changed_at: Some(now),
            generation: 0,
        };
        self.db
            .create(
                kind::USER,
                &create.name,
                &rec,
                &format!("user {}", create.name),
            )
            .await?;
        self.sync_members().await;
        Ok(rec.view().into_answer())
    }

    /// Refuses a change that would leave no enabled admin.
    fn keep_an_admin(&self, name: &str, after: Option<&UserRecord>) -> Result<(), CoreError> {
        let still_admin = after.is_some_and(|u| u.role == Role::Admin && !u.disabled);
        if still_admin {
            return Ok(());
        }
        let others = self
            .db
            .list::<UserRecord>(kind::USER)
            .into_iter()
            .any(|u| u.name != name && u.role == Role::Admin && !u.disabled);
        if others {
            Ok(())
        } else {
            Err(errors::conflict(format!(
                "user {name} is the last enabled admin: make another user admin first"
            )))
        }
    }

    async fn update_user(
        &self,
        caller: &Caller,
        name: &str,
        update: UserUpdate,
    ) -> Result<Answer, CoreError> {
        let (mut user, _) = self
            .db
            .get::<UserRecord>(kind::USER, name)
            .ok_or_else(|| errors::not_found(format!("user {name}")))?;
        if let Some(role) = update.role {
            user.role = role;
        }
        if let Some(d) = update.disabled {
            user.disabled = d;
        }
        if user.name == caller.user && user.disabled {
            return Err(errors::invalid("disabled", "you cannot disable yourself"));
        }
        self.keep_an_admin(name, Some(&user))?;
        let hash = match update.password {
            Some(p) => Some(self.hash_password(p).await?),
            None => None,
        };
        let now = now_rfc3339();
        let rec = self
            .db
            .update::<UserRecord, _>(kind::USER, name, |u| {
                if let Some(role) = update.role {
                    u.role = role;
                }
                if let Some(d) = update.disabled {
                    u.disabled = d;
                }
                if let Some(h) = &hash {
                    u.password_hash = Some(h.clone());
                    u.password_changed_at = Some(now.clone());
                }
                u.generation += 1;
                Ok(())
            })
            .await?;
        self.access.sessions.end_user(name);
        self.sync_members().await;
        Ok(rec.view().into_answer())
    }

    async fn delete_user(&self, name: &str) -> Result<Answer, CoreError> {
        if self.db.get::<UserRecord>(kind::USER, name).is_none() {
            return Err(errors::not_found(format!("user {name}")));
        }
        self.keep_an_admin(name, None)?;
        // The tokens first: a user is never gone while a token of it is
        // still accepted.
        for key in self.token_keys(|t| t.user == name) {
            self.db.delete(kind::TOKEN, &key).await?;
        }
        self.db.delete(kind::USER, name).await?;
        self.access.sessions.end_user(name);
        self.sync_members().await;
        Ok(Answer::Empty)
    }

    fn token_keys(&self, pick: impl Fn(&TokenRecord) -> bool) -> Vec<String> {
        self.db.store().list_with(kind::TOKEN, |key, v, _| {
            let t = TokenRecord::deserialize(v).ok()?;
            pick(&t).then(|| key.to_string())
        })
    }

    async fn create_token(
        &self,
        caller: &Caller,
        create: TokenCreate,
    ) -> Result<Answer, CoreError> {
        let user_name = create.user.clone().unwrap_or_else(|| caller.user.clone());
        if user_name != caller.user && caller.role < Role::Admin {
            return Err(forbidden(
                "only an admin may create a token for another user",
            ));
        }
        let user = self
            .db
            .get::<UserRecord>(kind::USER, &user_name)
            .map(|(u, _)| u)
            .ok_or_else(|| errors::invalid("user", format!("no user {user_name}")))?;
        if user.disabled {
            return Err(errors::invalid(
                "user",
                format!("user {user_name} is disabled"),
            ));
        }
        // A token acts at most as its user, and never beyond the caller's
        // own present role.
        let ceiling = if user_name == caller.user {
            user.role.min(caller.role)
        } else {
            user.role
        };
        let role = create.role.unwrap_or(ceiling);
        if role > ceiling {
            return Err(errors::invalid(
                "role",
                format!("{role} is above what the token may have ({ceiling})"),
            ));
        }
        let now = time::OffsetDateTime::now_utc();
        let expires = create.expires_in_s.map(|s| now + Duration::from_secs(s));
        let rec = TokenRecord {
            name: create.name,
            user: user_name,
            role,
            created_at: rfc3339(now),
            created_by: caller.user.clone(),
            expires_at: expires.map(rfc3339),
            expires_unix: expires.map(|t| t.unix_timestamp()),
        };
        let secret = secret::new_secret(secret::TOKEN_PREFIX);
        let key = secret::key(&secret);
        self.db.create(kind::TOKEN, &key, &rec, "token").await?;
        self.sync_members().await;
        Ok(NewTokenView {
            token: secret,
            details: rec.view(&key, now.unix_timestamp()),
        }
        .into_answer())
    }

    async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<Answer, CoreError> {
        let id = id.to_ascii_lowercase();
        let mine_or_admin = |t: &TokenRecord| t.user == caller.user || caller.role >= Role::Admin;
        let keys = self.token_keys(|t| mine_or_admin(t));
        let found: Vec<&String> = keys.iter().filter(|k| secret::token_id(k) == id).collect();
        let [key] = found.as_slice() else {
            return Err(errors::not_found(format!("token {id}")));
        };
        self.db.delete(kind::TOKEN, key).await?;
        self.sync_members().await;
        Ok(Answer::Empty)
    }

    /// Waits until every online member has applied this host's store up to
    /// now, so that a revoked token or a changed user holds there too when
    /// the change answers. A member that cannot say so in time is logged:
    /// it applies the change as soon as it hears from the leader again.
    pub(crate) async fn sync_members(&self) {
        let after = self.db.store().revision();
        let members: Vec<HostRecord> = self
            .db
            .list::<HostRecord>(kind::HOST)
            .into_iter()
            .filter(|h| h.id != self.host.id && h.online && !h.removed)
            .collect();
        let calls = members.iter().map(|h| async move {
            let read = Read {
                action: Action::GetHost,
                after,
            };
            (h, self.call_peer(h, read, SYNC_TIMEOUT).await)
        });
        for (h, r) in futures_util::future::join_all(calls).await {
            if let Err(e) = r {
                tracing::warn!(host = %h.id, error = %e, "a member did not confirm an access change in time; it applies it when it hears from the leader");
            }
        }
    }

    // ---- audit ----

    /// Appends one entry to the audit log.
    pub(crate) async fn record_audit(&self, e: AuditEntry) {
        // A caller's refused requests are recorded at a bounded rate, so
        // that a flood of them can neither push the log's real entries out
        // nor load the store; what was left out is counted in the next one.
        let mut result = e.result;
        if e.status >= 400 {
            let who = format!("{}/{}", e.user, e.credential.as_deref().unwrap_or("-"));
            match self.access.refusals.admit(&who, Instant::now()) {
                None => return,
                Some(0) => {}
                Some(skipped) => {
                    result = format!(
                    "{result} (and {skipped} more refused requests of this caller not recorded)"
                )
                }
            }
        }
        let rec = AuditRecord {
            seq: 0,
            time: now_rfc3339(),
            user: e.user,
            role: e.role,
            credential: e.credential,
            address: e.address.to_string(),
            host: self.host.id.clone(),
            operation: e.operation.to_string(),
            request: e.request,
            status: e.status,
            result,
        };
        if !self.audit.append(&self.db, rec.clone()).await {
            tracing::error!(entry = ?rec, "an audit entry could not be recorded");
        }
    }
}

/// The short id of a session: the first 16 hex digits of its digest.
fn session_id(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

impl Sessions {
    /// Ends the session of short id `id`.
    fn end_id(&self, id: &str) {
        self.end_where(|digest| session_id(digest) == id);
    }
}

#[cfg(test)]
mod tests;
