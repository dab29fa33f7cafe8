//! Getting a Bearer token from a challenge's realm.
//!
//! Anonymous and Basic credentials use `GET realm?service=..&scope=..` (Docker's token
//! protocol); an identity token (docker's `identitytoken`, an OAuth2 refresh token) uses the
//! OAuth2 `POST` form. Credentials never travel to a plain-HTTP realm on another host.

use std::time::Duration;

use super::auth::{Credential, TokenKey, TokenResponse, query_escape};
use super::transport::{Method, Request};
use super::{Endpoint, Registry, RegistryError, is_loopback_host};

const TOKEN_LIMIT: u64 = 1 << 20;

impl Registry {
    pub(super) fn fetch_token(
        &self,
        ep: &Endpoint,
        key: &TokenKey,
    ) -> Result<(String, Duration), RegistryError> {
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
                params.push(format!("refresh_token={}", query_escape(refresh)));
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
                    r.authorization = Some(Credential::basic_header(username, password));
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
        Ok((token.to_owned(), parsed.lifetime()))
    }
}
