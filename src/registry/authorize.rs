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
use super::transport::{Method, Request, Response, TransportError, authority_of};
use super::{Endpoint, Registry, RegistryError, is_loopback_host};
use crate::secret::Secret;

const TOKEN_LIMIT: u64 = 1 << 20;

/// Where an authorised request goes: a path below `/v2/` of the endpoint, or a URL the
/// registry gave (an upload session's `Location`).
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Path(&'a str),
    Url(&'a str),
}

/// The access a request needs: `repository` with `actions`, plus `pull` on other repositories
/// (the source of a cross-repository mount). Token servers get one `scope` parameter each.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub repository: &'a str,
    pub actions: &'a str,
    pub also_pull: Option<&'a str>,
}

impl Access<'_> {
    /// The space-separated scope string (`repository:a/b:pull,push repository:c/d:pull`).
    pub fn scope(&self) -> String {
        if self.repository.is_empty() {
            return String::new();
        }
        let mut s = format!("repository:{}:{}", self.repository, self.actions);
        if let Some(other) = self.also_pull.filter(|o| *o != self.repository) {
            s.push_str(&format!(" repository:{other}:pull"));
        }
        s
    }

    fn push(&self) -> bool {
        self.actions.split(',').any(|a| a == "push")
    }
}

/// The challenge's scope plus any of ours on a repository it does not name (a mount's source:
/// registries challenge for the target repository only).
fn merge_scopes(asked: &str, ours: &str) -> String {
    let mut out = asked.to_owned();
    for item in ours.split(' ').filter(|s| !s.is_empty()) {
        let resource = item.rsplit_once(':').map_or(item, |(r, _)| r);
        let named = asked
            .split(' ')
            .any(|a| a.rsplit_once(':').map_or(a, |(r, _)| r) == resource);
        if !named {
            out.push(' ');
            out.push_str(item);
        }
    }
    out
}

impl Registry {
    /// Sends a request to `path` (below `/v2/`) of `ep` for `repository`, answering
    /// authentication challenges. `actions` is the scope asked for (`pull`, `pull,push`).
    pub fn send_authorized(
        &self,
        ep: &Endpoint,
        repository: &str,
        actions: &str,
        req: Request,
        path: &str,
    ) -> Result<Response, RegistryError> {
        let access = Access {
            repository,
            actions,
            also_pull: None,
        };
        self.send_with_access(ep, &access, req, Target::Path(path))
    }

    /// [`Registry::send_authorized`] for any [`Access`] and [`Target`]. Refusals name push
    /// access when the access includes `push`.
    pub fn send_with_access(
        &self,
        ep: &Endpoint,
        access: &Access<'_>,
        mut req: Request,
        target: Target<'_>,
    ) -> Result<Response, RegistryError> {
        req.tls_verify = ep.tls_verify;
        let scope = access.scope();
        let repository = access.repository;
        let mut tried_fresh = false;
        let mut tried_scope_retry = false;
        loop {
            req.url = match target {
                Target::Path(path) => format!("{}/v2/{path}", self.base_of(ep)),
                Target::Url(url) => url.to_owned(),
            };
            // An upload session the registry handed to another host (a storage service)
            // never sees the registry's credentials.
            if let Target::Url(url) = target
                && authority_of(url)? != authority_of(&self.base_of(ep))?
            {
                req.authorization = None;
                return Ok(self.transport.send(&req)?);
            }
            req.authorization = self.authorization_for(ep, &scope)?;
            let resp = match self.transport.send(&req) {
                Err(TransportError::Request { .. })
                    if ep.http_fallback
                        && req.url.starts_with("https:")
                        && matches!(target, Target::Path(_)) =>
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
            let denied = || {
                let repository = format!("{}/{}", ep.login_host, repository);
                let host = ep.login_host.clone();
                if access.push() {
                    RegistryError::PushDenied { repository, host }
                } else {
                    RegistryError::Unauthorized { repository, host }
                }
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
                            .map(|asked| merge_scopes(asked, &scope))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_scopes_name_the_mount_source_for_pull() {
        let plain = Access {
            repository: "team/app",
            actions: "pull,push",
            also_pull: None,
        };
        assert_eq!(plain.scope(), "repository:team/app:pull,push");
        assert!(plain.push());
        let mount = Access {
            also_pull: Some("library/busybox"),
            ..plain
        };
        assert_eq!(
            mount.scope(),
            "repository:team/app:pull,push repository:library/busybox:pull"
        );
        let same = Access {
            also_pull: Some("team/app"),
            ..plain
        };
        assert_eq!(same.scope(), "repository:team/app:pull,push");
        let pull = Access {
            repository: "x",
            actions: "pull",
            also_pull: None,
        };
        assert!(!pull.push());
    }

    #[test]
    fn a_challenge_scope_keeps_the_mount_source() {
        assert_eq!(
            merge_scopes(
                "repository:a:pull,push",
                "repository:a:pull,push repository:b:pull"
            ),
            "repository:a:pull,push repository:b:pull"
        );
        assert_eq!(
            merge_scopes("repository:a:push,pull", "repository:a:pull,push"),
            "repository:a:push,pull"
        );
    }
}
