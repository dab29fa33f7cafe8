//! `nook login` and `nook logout`, in docker's config format.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};

use super::Session;
use crate::config::auth;
use crate::registry::{Registry, RegistryError, RegistryOptions};
use crate::secret::{Credential, Secret};

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible to other users in `ps`; prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<Secret>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Verify the registry's TLS certificate (--tls-verify=false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Check the credentials and save nothing (`nook serve`'s `POST /auth`).
    #[arg(long, hide = true)]
    pub verify_only: bool,
    /// Registry (default docker.io).
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (default docker.io).
    pub server: Option<String>,
}

fn prompt_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s)?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

/// Reads a line from the terminal with echo off, restoring the terminal afterwards.
fn prompt_secret(prompt: &str) -> Result<Secret> {
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let line = prompt_line(prompt);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    line.map(Secret::from)
}

pub fn login(session: &Session, a: LoginArgs) -> Result<i32> {
    let host = auth::normalize_key(a.server.as_deref().unwrap_or("docker.io"));
    let interactive = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if interactive && !a.password_stdin => prompt_line("Username: ")?,
        None => bail!("give a user name with -u"),
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Secret::new(s.trim_end_matches(['\n', '\r']))
    } else {
        match a.password {
            Some(p) => p,
            None if interactive => prompt_secret("Password: ")?,
            None => bail!("give the password on standard input with --password-stdin"),
        }
    };
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    // Check the credentials against the registry before saving them.
    let base = session.registry(a.tls_verify);
    let ep = base.login_endpoint(&host);
    let (u, p) = (username.clone(), password.clone());
    let checker = Registry::new(RegistryOptions {
        credentials: Arc::new(move |_| {
            Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            })
        }),
        ..base.options().clone()
    });
    match checker.ping(&ep) {
        Ok(()) => {}
        Err(RegistryError::Unauthorized { .. } | RegistryError::BadCredentials { .. }) => {
            bail!("login to {host} failed: incorrect username or password")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot reach {host}")),
    }
    if !a.verify_only {
        let place = auth::save(&host, &username, &password)?;
        tracing::debug!(%place, "credentials saved");
    }
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(a: LogoutArgs) -> Result<i32> {
    let host = auth::normalize_key(a.server.as_deref().unwrap_or("docker.io"));
    if auth::erase(&host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(0)
}
