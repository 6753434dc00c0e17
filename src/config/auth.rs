//! Resolves the `control_auth_*` and `metrics_auth` keys of the tuning file's `[tack]` table
//! into a [`ControlAuth`] (see [`crate::auth`] for the check itself). Files are read through
//! the [`RouteEnv`], like every other file the configuration names.
//!
//! Errors, all at start-up: more than one credential key; an unreadable or non-UTF-8 file; an
//! empty token or empty file; a token that cannot travel in a header; basic credentials
//! without `user:pass`; `metrics_auth = true` without a credential. Messages name the key and
//! file, never the secret.

use std::path::Path;

use super::tuning::TackSection;
use super::ConfigError;
use crate::auth::{ControlAuth, Credential};
use crate::route::RouteEnv;

/// `None` when no credential is configured (the default: no authentication, as Pushpin).
pub fn resolve(
    t: &TackSection,
    origin: &str,
    env: &dyn RouteEnv,
) -> Result<Option<ControlAuth>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.to_string(),
        message,
    };
    let set: Vec<&str> = [
        ("control_auth_bearer", t.control_auth_bearer.is_some()),
        (
            "control_auth_bearer_file",
            t.control_auth_bearer_file.is_some(),
        ),
        ("control_auth_basic", t.control_auth_basic.is_some()),
        (
            "control_auth_basic_file",
            t.control_auth_basic_file.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    if set.len() > 1 {
        return Err(invalid(format!(
            "[tack] {}: set only one control_auth_* key",
            set.join(", ")
        )));
    }
    let read = |key: &str, path: &Path| -> Result<String, ConfigError> {
        let bytes = env.read_file(path).map_err(|e| ConfigError::Read {
            path: format!("{} ([tack] {key})", path.display()),
            message: e.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
            path: format!("{} ([tack] {key})", path.display()),
            message: "not UTF-8".to_string(),
        })?;
        let secret = text.trim();
        if secret.lines().count() > 1 {
            return Err(invalid(format!(
                "[tack] {key}: {} must hold one line",
                path.display()
            )));
        }
        Ok(secret.to_string())
    };
    let bad = |key: &str, why: String| invalid(format!("[tack] {key}: {why}"));
    let credential = if let Some(s) = &t.control_auth_bearer {
        Some(Credential::bearer(&s.0).map_err(|e| bad("control_auth_bearer", e))?)
    } else if let Some(p) = &t.control_auth_bearer_file {
        let key = "control_auth_bearer_file";
        let token = read(key, p)?;
        Some(Credential::bearer(&token).map_err(|e| bad(key, format!("{}: {e}", p.display())))?)
    } else if let Some(s) = &t.control_auth_basic {
        Some(Credential::basic(&s.0).map_err(|e| bad("control_auth_basic", e))?)
    } else if let Some(p) = &t.control_auth_basic_file {
        let key = "control_auth_basic_file";
        let pair = read(key, p)?;
        Some(Credential::basic(&pair).map_err(|e| bad(key, format!("{}: {e}", p.display())))?)
    } else {
        None
    };
    let metrics = t.metrics_auth.unwrap_or(false);
    match credential {
        Some(credential) => Ok(Some(ControlAuth {
            credential,
            metrics,
        })),
        None if metrics => Err(invalid(
            "[tack] metrics_auth = true: no credential to check (set a control_auth_* key)"
                .to_string(),
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scheme;
    use crate::config::tuning::TuningFile;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    struct Files(HashMap<PathBuf, Vec<u8>>);

    impl RouteEnv for Files {
        fn resolve(&self, _: &str, _: u16) -> std::io::Result<Vec<SocketAddr>> {
            Ok(Vec::new())
        }
        fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn resolve_text(toml: &str) -> Result<Option<ControlAuth>, String> {
        let files = Files(HashMap::from([
            (PathBuf::from("/t/token"), b"  tok-123\n".to_vec()),
            (PathBuf::from("/t/empty"), b"\n\n".to_vec()),
            (PathBuf::from("/t/two"), b"a\nb\n".to_vec()),
            (PathBuf::from("/t/basic"), b"alice:pw\n".to_vec()),
            (PathBuf::from("/t/latin1"), vec![0xe9]),
        ]));
        let file = TuningFile::parse(toml, "t.toml").map_err(|e| e.to_string())?;
        resolve(&file.tack, "t.toml", &files).map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default() {
        assert_eq!(resolve_text(""), Ok(None));
        assert_eq!(resolve_text("[tack]\nmetrics_auth = false\n"), Ok(None));
    }

    #[test]
    fn every_source() {
        let check = |toml: &str, scheme: Scheme, header: &str, metrics: bool| {
            let a = resolve_text(toml).unwrap().expect("auth on");
            assert_eq!(a.credential.scheme(), scheme, "{toml}");
            assert_eq!(a.metrics, metrics, "{toml}");
            assert_eq!(
                a.credential.check(Some(header.as_bytes())),
                Ok(()),
                "{toml}"
            );
        };
        check(
            "[tack]\ncontrol_auth_bearer = \"inline\"\n",
            Scheme::Bearer,
            "Bearer inline",
            false,
        );
        check(
            "[tack]\ncontrol_auth_bearer_file = \"/t/token\"\nmetrics_auth = true\n",
            Scheme::Bearer,
            "Bearer tok-123",
            true,
        );
        check(
            "[tack]\ncontrol_auth_basic = \"bob:x\"\n",
            Scheme::Basic,
            "Basic Ym9iOng=",
            false,
        );
        check(
            "[tack]\ncontrol_auth_basic_file = \"/t/basic\"\n",
            Scheme::Basic,
            "Basic YWxpY2U6cHc=",
            false,
        );
    }

    #[test]
    fn clear_errors() {
        let cases = [
            (
                "control_auth_bearer = \"\"",
                "t.toml: [tack] control_auth_bearer: the bearer token is empty",
            ),
            (
                "control_auth_bearer_file = \"/t/empty\"",
                "t.toml: [tack] control_auth_bearer_file: /t/empty: the bearer token is empty",
            ),
            (
                "control_auth_bearer_file = \"/t/missing\"",
                "cannot read /t/missing ([tack] control_auth_bearer_file): entity not found",
            ),
            (
                "control_auth_basic_file = \"/t/latin1\"",
                "cannot read /t/latin1 ([tack] control_auth_basic_file): not UTF-8",
            ),
            (
                "control_auth_bearer_file = \"/t/two\"",
                "t.toml: [tack] control_auth_bearer_file: /t/two must hold one line",
            ),
            (
                "control_auth_basic_file = \"/t/token\"",
                "t.toml: [tack] control_auth_basic_file: /t/token: basic credentials must be user:pass",
            ),
            (
                "control_auth_bearer = \"a\"\ncontrol_auth_basic = \"b:c\"",
                "t.toml: [tack] control_auth_bearer, control_auth_basic: set only one control_auth_* key",
            ),
            (
                "metrics_auth = true",
                "t.toml: [tack] metrics_auth = true: no credential to check (set a control_auth_* key)",
            ),
        ];
        for (lines, want) in cases {
            assert_eq!(
                resolve_text(&format!("[tack]\n{lines}\n")),
                Err(want.to_string()),
                "{lines}"
            );
        }
        // The secret is never in an error.
        let e = resolve_text("[tack]\ncontrol_auth_basic = \"hunter2\"\n").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
