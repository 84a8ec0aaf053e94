//! `dyno labs`, `labs:enable`, `labs:disable`: Heroku Labs features of an app (today one,
//! `log-runtime-metrics`), in Heroku's words; `labs:enable` also switches the general ones
//! (`preboot`), as Heroku's API does.

use dyno_api::{ApiClient, AppFeature};

use crate::platform::out;

/// `=== ⬢ APP Features`, then `[+] name  description` (`[ ]` when off).
fn show(app: &str, features: &[AppFeature]) -> String {
    let width = features.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let mut s = format!("=== ⬢ {app} Features\n");
    for f in features {
        let mark = if f.enabled { "+" } else { " " };
        s.push_str(&format!("[{mark}] {:<width$}  {}\n", f.name, f.description));
    }
    s
}

pub async fn list(api: &ApiClient, app: &str, json: bool) -> Result<(), String> {
    let mut features = api.features(app).await.map_err(|e| e.to_string())?;
    // As Heroku's `labs`: the general features (`preboot`) are `heroku features`' list.
    features.retain(|f| f.state != "general");
    out(json, &features, || show(app, &features));
    Ok(())
}

/// `Enabling log-runtime-metrics for APP... done`, as Heroku prints it.
pub async fn switch(
    api: &ApiClient,
    app: &str,
    feature: &str,
    enabled: bool,
    json: bool,
) -> Result<(), String> {
    if !json {
        let verb = if enabled { "Enabling" } else { "Disabling" };
        eprint!("{verb} {feature} for {app}... ");
    }
    let result = api.set_feature(app, feature, enabled).await;
    let updated = match result {
        Ok(f) => f,
        Err(e) => {
            if !json {
                eprintln!("failed");
            }
            return Err(e.to_string());
        }
    };
    out(json, &updated, || "done\n".to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_marks_enabled_features() {
        let features = [
            AppFeature {
                name: "log-runtime-metrics".into(),
                description: "Samples.".into(),
                enabled: true,
                ..Default::default()
            },
            AppFeature {
                name: "other".into(),
                description: "Off.".into(),
                enabled: false,
                ..Default::default()
            },
        ];
        assert_eq!(
            show("hello", &features),
            "=== ⬢ hello Features\n\
             [+] log-runtime-metrics  Samples.\n\
             [ ] other                Off.\n"
        );
    }
}
