//! Authorised requests: answering `WWW-Authenticate` challenges and getting Bearer tokens.
//!
//! Every registry request goes through [`Registry::send_authorized`]: it sends what the host
//! asked for last time (a cached token, or Basic credentials), and on 401 reads the challenge,
//! gets a token from the realm and tries again, once more on `insufficient_scope`.
//! Anonymous and Basic credentials use `GET realm?service=..&scope=..` (Docker's token
//! protocol); an identity token (docker's `identitytoken`, an OAuth2 refresh token) uses the
//! OAuth2 `POST` form. Credentials never travel to a plain-HTTP realm on another host.

use std::time::Duration;

use super::auth::{self, Credential, TokenKey, TokenResponse, query_escape};
use super::transport::{Method, Request, Response, TransportError};
use super::{Endpoint, Registry, RegistryError, is_loopback_host};
use crate::secret::Secret;

const TOKEN_LIMIT: u64 = 1 << 20;

impl Registry {
    /// Sends a request to `path` (below `/v2/`) of `ep` for `repository`, answering
    /// authentication challenges. `actions` is the scope asked for (`pull`, `pull,push`).
    pub fn send_authorized(
        &self,
        ep: &Endpoint,
        repository: &str,
        actions: &str,
        mut req: Request,
        path: &str,
    ) -> Result<Response, RegistryError> {
        req.tls_verify = ep.tls_verify;
        let scope = if repository.is_empty() {
            String::new()
        } else {
            format!("repository:{repository}:{actions}")
        };
        let mut tried_fresh = false;
        let mut tried_scope_retry = false;
        loop {
            req.url = format!("{}/v2/{path}", self.base_of(ep));
            req.authorization = self.authorization_for(ep, &scope)?;
            let resp = match self.transport.send(&req) {
                Err(TransportError::Request { .. })
                    if ep.http_fallback && req.url.starts_with("https:") =>
                {
                    let mut d = self.downgraded.lock().unwrap_or_else(|p| p.into_inner());
                    d.insert(ep.host.clone(), true);
                    continue;
                }
                other => other?,
            };
            if resp.status != 401 && resp.status != 403 {
                return Ok(resp);
            }
            let challenges = resp
                .header("www-authenticate")
                .map(auth::parse_challenges)
                .unwrap_or_default();
            let bearer = challenges.iter().find(|c| c.scheme == "bearer");
            let basic = challenges.iter().any(|c| c.scheme == "basic");
            let insufficient =
                bearer.is_some_and(|c| c.param("error") == Some("insufficient_scope"));
            let denied = || RegistryError::Unauthorized {
                repository: format!("{}/{}", ep.login_host, repository),
                host: ep.login_host.clone(),
            };
            if resp.status == 403 && !insufficient {
                return Err(denied());
            }
            match bearer {
                Some(c) if !tried_fresh || (insufficient && !tried_scope_retry) => {
                    if tried_fresh {
                        tried_scope_retry = true;
                    }
                    tried_fresh = true;
                    let key = auth::TokenKey {
                        realm: c.param("realm").unwrap_or_default().to_owned(),
                        service: c.param("service").unwrap_or_default().to_owned(),
                        scope: c
                            .param("scope")
                            .map(str::to_owned)
                            .unwrap_or_else(|| scope.clone()),
                    };
                    self.auth.forget_token(&key);
                    self.auth.remember_scheme(&ep.host, &scope, Some(key));
                }
                None if basic && !tried_fresh && self.credential(&ep.login_host).is_some() => {
                    tried_fresh = true;
                    self.auth.remember_scheme(&ep.host, &scope, None);
                }
                _ => return Err(denied()),
            }
        }
    }

    /// The Authorization header for a request to `ep` under `scope`, fetching a token if the
    /// host asked for Bearer and none is cached.
    fn authorization_for(
        &self,
        ep: &Endpoint,
        scope: &str,
    ) -> Result<Option<Secret>, RegistryError> {
        let bearer = |t: &Secret| Secret::new(format!("Bearer {}", t.expose()));
        match self.auth.scheme_for(&ep.host, scope) {
            None => Ok(None),
            Some(None) => Ok(self.credential(&ep.login_host).and_then(|c| match c {
                Credential::Basic { username, password } => {
                    Some(auth::basic_header(&username, &password))
                }
                Credential::IdentityToken(_) => None,
            })),
            Some(Some(key)) => {
                if let Some(t) = self.auth.token(&key) {
                    return Ok(Some(bearer(&t)));
                }
                let (token, lifetime) = self.fetch_token(ep, &key)?;
                let header = bearer(&token);
                self.auth.store_token(key, token, lifetime);
                Ok(Some(header))
            }
        }
    }

    pub(super) fn fetch_token(
        &self,
        ep: &Endpoint,
        key: &TokenKey,
    ) -> Result<(Secret, Duration), RegistryError> {
        let realm = &key.realm;
        let realm_host = realm
            .strip_prefix("https://")
            .or_else(|| realm.strip_prefix("http://"))
            .map(|r| r.split(['/', '?']).next().unwrap_or(""))
            .ok_or_else(|| RegistryError::TokenBody {
                realm: realm.clone(),
            })?;
        let plain = realm.starts_with("http://");
        let credential = self.credential(&ep.login_host);
        let same_host = realm_host.eq_ignore_ascii_case(&ep.host);
        if credential.is_some()
            && plain
            && !is_loopback_host(realm_host)
            && !(same_host && ep.base.starts_with("http://"))
        {
            return Err(RegistryError::InsecureRealm {
                host: ep.login_host.clone(),
                realm: realm.clone(),
            });
        }
        let mut params = Vec::new();
        if !key.service.is_empty() {
            params.push(format!("service={}", query_escape(&key.service)));
        }
        for s in key.scope.split(' ').filter(|s| !s.is_empty()) {
            params.push(format!("scope={}", query_escape(s)));
        }
        let mut req = match &credential {
            Some(Credential::IdentityToken(refresh)) => {
                params.push("grant_type=refresh_token".into());
                params.push("client_id=nook".into());
                params.push(format!("refresh_token={}", query_escape(refresh.expose())));
                let mut r = Request::get(realm.clone())
                    .header("content-type", "application/x-www-form-urlencoded");
                r.method = Method::Post;
                r.body = Some(params.join("&").into_bytes());
                r
            }
            other => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = if params.is_empty() {
                    realm.clone()
                } else {
                    format!("{realm}{sep}{}", params.join("&"))
                };
                let mut r = Request::get(url);
                if let Some(Credential::Basic { username, password }) = other {
                    r.authorization = Some(auth::basic_header(username, password));
                }
                r
            }
        };
        req.tls_verify = if same_host {
            ep.tls_verify
        } else {
            self.options.tls_verify
        };
        let resp = self.transport.send(&req)?;
        match resp.status {
            200 => {}
            401 | 403 if credential.is_some() => {
                return Err(RegistryError::BadCredentials {
                    host: ep.login_host.clone(),
                });
            }
            status => {
                return Err(RegistryError::Token {
                    realm: realm.clone(),
                    status,
                });
            }
        }
        let body = resp.read_limited(TOKEN_LIMIT)?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| RegistryError::TokenBody {
                realm: realm.clone(),
            })?;
        let token = parsed.bearer().ok_or_else(|| RegistryError::TokenBody {
            realm: realm.clone(),
        })?;
        Ok((token.clone(), parsed.lifetime()))
    }
}
