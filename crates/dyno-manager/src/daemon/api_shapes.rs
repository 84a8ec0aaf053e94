//! The API's shapes of the daemon's records: apps' releases, formation, drains, domains and
//! labs features as Heroku's Platform API shows them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dyno_api::heroku::{Domain, Ref, UserRef};
use dyno_api::{ApiError, AppFeature, Formation, LogDrain, LogQuery, Release};
use dyno_logs::logring::Filter;
use dyno_logs::logs::Source;
use dyno_state::ids::{formation_uuid, release_uuid};

use super::runtime_metrics::{FEATURES, LOG_RUNTIME_METRICS, PREBOOT};

pub(super) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(super) fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_params(e.to_string())
}

/// A domain in Heroku's shape; its id comes from the app's and the hostname.
pub(super) fn domain_shape(
    app: &dyno_state::model::App,
    app_ref: &Ref,
    hostname: &str,
    kind: &str,
    added_ms: i64,
) -> Domain {
    let at = dyno_api::rfc3339(time(added_ms));
    Domain {
        id: formation_uuid(&app.uuid, &format!("domain:{hostname}")),
        hostname: hostname.to_string(),
        kind: kind.to_string(),
        // Where to point the name: the router answers for the app's own name.
        cname: (kind == "custom").then(|| format!("{}.localhost", app.name)),
        status: if kind == "custom" {
            "succeeded"
        } else {
            "none"
        }
        .to_string(),
        acm_status: None,
        acm_status_reason: None,
        sni_endpoint: None,
        app: app_ref.clone(),
        created_at: at.clone(),
        updated_at: at,
    }
}

pub(super) fn release_shape(
    r: &dyno_state::model::Release,
    app_uuid: &str,
    app: &Ref,
    user: &UserRef,
    current: u32,
) -> Release {
    let created_at = dyno_api::rfc3339(time(r.created_at_ms));
    Release {
        version: r.version,
        description: r.description.clone(),
        updated_at: created_at.clone(),
        created_at,
        current: r.version == current,
        id: release_uuid(app_uuid, r.version),
        status: r.status.as_str().into(),
        user: user.clone(),
        app: app.clone(),
        eligible_for_rollback: r.status == dyno_state::ReleaseStatus::Succeeded,
        addon_plan_names: Vec::new(),
        output_stream_url: None,
        slug: None,
    }
}

/// The app features of `app` (labs and general), as it is now.
pub(super) fn features_of(app: &dyno_state::model::App) -> Vec<AppFeature> {
    FEATURES
        .iter()
        .map(|(name, description, general)| AppFeature {
            name: (*name).to_string(),
            description: (*description).to_string(),
            enabled: match *name {
                LOG_RUNTIME_METRICS => app.metrics_enabled,
                PREBOOT => app.preboot,
                _ => false,
            },
            id: formation_uuid(&app.uuid, &format!("feature:{name}")),
            // Heroku's `features` lists the `general` ones, `labs` the others
            // (`log-runtime-metrics` is a labs feature there, `preboot` a general one).
            state: if *general { "general" } else { "beta" }.into(),
            ..Default::default()
        })
        .collect()
}

/// `feature` of `app`, or a 404 that names the features there are.
pub(super) fn feature_of(
    app: &dyno_state::model::App,
    feature: &str,
) -> Result<AppFeature, ApiError> {
    features_of(app)
        .into_iter()
        .find(|f| f.name == feature)
        .ok_or_else(|| {
            // What `heroku ps:exec` (and ps:copy, ps:forward, ps:socks) asks for first.
            if feature == "runtime-heroku-exec" {
                return ApiError::not_found(format!(
                    "dyno has no Heroku Exec (ps:exec, ps:copy, ps:forward, ps:socks): for a \
                     shell next to the app, start a one-off dyno with `heroku run bash -a {}`.",
                    app.name
                ));
            }
            let known: Vec<&str> = FEATURES.iter().map(|(name, _, _)| *name).collect();
            ApiError::not_found(format!(
                "No feature {feature}: the features are {}. See `heroku features -a {}` and \
                 `heroku labs -a {}`.",
                known.join(", "),
                app.name,
                app.name
            ))
        })
}

/// The log hub's filter for an API query.
pub(super) fn filter(query: &LogQuery) -> Filter {
    Filter {
        ps: query.ps.clone(),
        source: query.source.as_deref().map(|s| match s {
            "app" => Source::App,
            "router" => Source::Router,
            _ => Source::Heroku,
        }),
    }
}

pub(super) fn drain_out(d: dyno_state::model::Drain) -> LogDrain {
    let created_at = dyno_api::rfc3339(time(d.created_at_ms));
    LogDrain {
        id: d.token.strip_prefix("d.").unwrap_or(&d.token).to_string(),
        token: d.token,
        url: d.url.as_str().to_string(),
        updated_at: created_at.clone(),
        created_at,
        addon: None,
    }
}

pub(super) fn formation_out(
    f: dyno_state::model::FormationEntry,
    app: &dyno_state::model::App,
    app_ref: &Ref,
    release: &dyno_state::model::Release,
) -> Formation {
    let created_at = dyno_api::rfc3339(time(app.created_at_ms));
    Formation {
        id: formation_uuid(&app.uuid, &f.process_type),
        command: release
            .process_types
            .get(&f.process_type)
            .cloned()
            .unwrap_or_default(),
        process_type: f.process_type,
        quantity: f.quantity,
        size: f.size,
        app: app_ref.clone(),
        updated_at: created_at.clone(),
        created_at,
    }
}
