//! Open log sessions (Heroku's `logplex_url`s): the app and query behind each secret, for
//! [`LIFETIME`] after it was opened (`heroku logs --tail` reconnects to the same URL when a
//! stream is cut), at most [`MOST`] at a time (the oldest goes first).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dyno_api::{ApiError, AppName, LogQuery};

/// How long a session's URL works.
pub const LIFETIME: Duration = Duration::from_secs(3600);
/// Open sessions kept at once.
pub const MOST: usize = 1000;

struct Session {
    app: AppName,
    query: LogQuery,
    opened: Instant,
}

#[derive(Default)]
pub struct LogSessions(Mutex<HashMap<String, Session>>);

impl LogSessions {
    /// Opens a session; its secret.
    pub fn open(&self, app: AppName, query: LogQuery) -> String {
        let secret = dyno_api::server::log_sessions::new_secret();
        let mut sessions = crate::lock(&self.0);
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.opened) < LIFETIME);
        if sessions.len() >= MOST {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            secret.clone(),
            Session {
                app,
                query,
                opened: now,
            },
        );
        secret
    }

    /// Sessions of `from` follow it to its new name (`apps:rename`).
    pub fn rename_app(&self, from: &AppName, to: &AppName) {
        for session in crate::lock(&self.0).values_mut() {
            if session.app == *from {
                session.app = to.clone();
            }
        }
    }

    /// The app and query of a session still open.
    pub fn get(&self, secret: &str) -> Result<(AppName, LogQuery), ApiError> {
        let sessions = crate::lock(&self.0);
        match sessions.get(secret) {
            Some(s) if s.opened.elapsed() < LIFETIME => Ok((s.app.clone(), s.query.clone())),
            _ => Err(ApiError::not_found(
                "No such log session, or it expired: open a new one (`heroku logs`).",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_kept_up_to_the_bound() {
        let sessions = LogSessions::default();
        let app = AppName::new("hello").unwrap();
        let first = sessions.open(app.clone(), LogQuery::default());
        assert_eq!(first.len(), 32);
        assert_eq!(sessions.get(&first).unwrap().0, app);
        assert!(sessions.get("nope").is_err());
        for _ in 1..MOST {
            sessions.open(app.clone(), LogQuery::default());
        }
        assert!(sessions.get(&first).is_ok());
        sessions.open(app.clone(), LogQuery::default());
        assert_eq!(
            sessions.get(&first).unwrap_err().status,
            404,
            "the oldest went"
        );
    }
}
