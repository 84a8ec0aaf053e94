//! One function per verb: what it asks the daemon and what it prints (text, or `--json`).

use std::collections::BTreeMap;

use dyno_api::{ApiClient, LogQuery};

use super::{
    live_goal, out, parse_change, patch_config, patch_formation, scaled_goal, show_config,
};
use crate::progress::{self, Goal, Mode, Progress};

/// A client error as the CLI prints it (its text says what to do).
pub(super) fn e(err: dyno_api::ClientError) -> String {
    err.to_string()
}

pub(super) async fn apps(api: &ApiClient, json: bool) -> Result<(), String> {
    let apps = api.list_apps().await.map_err(e)?;
    out(json, &apps, || {
        let mut s = String::from("=== Apps\n");
        for a in &apps {
            s.push_str(&format!("{}\n", a.name));
        }
        s
    });
    Ok(())
}

pub(super) async fn apps_create(api: &ApiClient, json: bool, name: String) -> Result<(), String> {
    let app = api.create_app(&name).await.map_err(e)?;
    // Heroku's `WEB_URL | GIT_URL` (the git URL when the daemon serves git over TCP).
    let urls = match &app.git_url {
        Some(git) => format!("{} | {git}", app.web_url),
        None => app.web_url.clone(),
    };
    out(json, &app, || {
        format!("Creating ⬢ {}... done\n{urls}\n", app.name)
    });
    Ok(())
}

/// `Renaming ⬢ OLD to NEW... done`, then the new web URL, as Heroku's CLI prints it.
pub(super) async fn apps_rename(
    api: &ApiClient,
    json: bool,
    app: String,
    new_name: String,
) -> Result<(), String> {
    if !json {
        eprint!("Renaming ⬢ {app} to {new_name}... ");
    }
    let renamed = api.rename_app(&app, &new_name).await.map_err(e)?;
    out(json, &renamed, || format!("done\n{}\n", renamed.web_url));
    Ok(())
}

pub(super) async fn apps_destroy(
    api: &ApiClient,
    json: bool,
    name: String,
    confirm: Option<String>,
) -> Result<(), String> {
    if confirm.as_deref() != Some(name.as_str()) {
        return Err(format!(
            "this destroys {name}, its dynos, releases and logs; to proceed, re-run with --confirm {name}"
        ));
    }
    let app = api.destroy_app(&name).await.map_err(e)?;
    out(json, &app, || {
        format!("Destroying ⬢ {}... done\n", app.name)
    });
    Ok(())
}

pub(super) async fn releases(api: &ApiClient, json: bool, app: String) -> Result<(), String> {
    let list = api.releases(&app).await.map_err(e)?;
    out(json, &list, || {
        let mut s = format!("=== ⬢ {app} Releases\n");
        for r in &list {
            // As Heroku's CLI marks a release by its status.
            let status = match r.status.as_str() {
                "failed" => "  (release command failed)",
                "pending" => "  (release command executing)",
                _ => "",
            };
            s.push_str(&format!(
                "v{:<4} {:<40} {}{}{status}\n",
                r.version,
                r.description,
                r.created_at,
                if r.current { "  (current)" } else { "" }
            ));
        }
        s
    });
    Ok(())
}

pub(super) async fn ps(api: &ApiClient, json: bool, app: String) -> Result<(), String> {
    let list = api.dynos(&app).await.map_err(e)?;
    out(json, &list, || {
        if list.is_empty() {
            return format!("No dynos on ⬢ {app}\n");
        }
        let mut s = String::new();
        let mut last_type = "";
        for d in &list {
            if d.process_type != last_type {
                let count = list
                    .iter()
                    .filter(|x| x.process_type == d.process_type)
                    .count();
                s.push_str(&format!(
                    "=== {} ({}): {} ({count})\n",
                    d.process_type, d.size, d.command
                ));
                last_type = &d.process_type;
            }
            s.push_str(&format!(
                "{}: {}{}\n",
                d.name,
                d.state,
                since(&d.updated_at, std::time::SystemTime::now())
            ));
        }
        s
    });
    Ok(())
}

pub(super) async fn ps_scale(
    api: &ApiClient,
    json: bool,
    changes: Vec<String>,
    app: String,
) -> Result<(), String> {
    let updates = changes
        .iter()
        .map(|c| parse_change(c))
        .collect::<Result<Vec<_>, _>>()?;
    let progress = Progress::start(Mode::for_output(json), "Scaling dynos");
    let goal = live_goal(&progress, scaled_goal(api, &app, &updates)).await;
    let formation = progress
        .follow(api, &app, &goal, patch_formation(api, &app, updates))
        .await?;
    out(json, &formation, || {
        let now: Vec<String> = formation
            .iter()
            .map(|f| format!("{} at {}:{}", f.process_type, f.quantity, f.size))
            .collect();
        format!("done, now running {}\n", now.join(", "))
    });
    Ok(())
}

pub(super) async fn config(api: &ApiClient, json: bool, app: String) -> Result<(), String> {
    let config = api.config(&app).await.map_err(e)?;
    out(json, &config, || show_config(&app, &config));
    Ok(())
}

pub(super) async fn config_set(
    api: &ApiClient,
    json: bool,
    pairs: Vec<String>,
    app: String,
) -> Result<(), String> {
    let mut changes = BTreeMap::new();
    for pair in &pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected KEY=value, e.g. LOG_LEVEL=debug"))?;
        changes.insert(k.to_string(), Some(v.to_string()));
    }
    let keys: Vec<&str> = changes.keys().map(|k| k.as_str()).collect();
    let title = format!("Setting {} and restarting ⬢ {app}", keys.join(", "));
    let (config, version) = patch_config(api, &app, json, &title, &changes).await?;
    out(json, &config, || {
        format!("done{version}\n{}", show_config(&app, &config))
    });
    Ok(())
}

pub(super) async fn config_unset(
    api: &ApiClient,
    json: bool,
    keys: Vec<String>,
    app: String,
) -> Result<(), String> {
    let changes: BTreeMap<String, Option<String>> =
        keys.iter().map(|k| (k.clone(), None)).collect();
    let title = format!("Unsetting {} and restarting ⬢ {app}", keys.join(", "));
    let (config, version) = patch_config(api, &app, json, &title, &changes).await?;
    out(json, &config, || format!("done{version}\n"));
    Ok(())
}

pub(super) async fn rollback(
    api: &ApiClient,
    json: bool,
    version: String,
    app: String,
) -> Result<(), String> {
    let v: u32 = version
        .trim_start_matches('v')
        .parse()
        .map_err(|_| format!("{version:?}: give a release like v3"))?;
    let progress = Progress::start(
        Mode::for_output(json),
        &format!("Rolling back ⬢ {app} to v{v}"),
    );
    let goal = live_goal(&progress, progress::release_goal(api, &app)).await;
    let release = progress
        .follow(api, &app, &goal, api.rollback(&app, v))
        .await
        .map_err(e)?;
    out(json, &release, || {
        format!("done, v{} ({})\n", release.version, release.description)
    });
    Ok(())
}

pub(super) async fn ps_type(
    api: &ApiClient,
    json: bool,
    changes: Vec<String>,
    app: String,
) -> Result<(), String> {
    let updates = changes
        .iter()
        .map(|c| match c.split_once('=') {
            // TYPE=SIZE is scale's TYPE:SIZE.
            Some((t, size)) => parse_change(&format!("{t}:{size}")),
            None => Err(format!("{c:?}: expected TYPE=SIZE, e.g. web=Standard-2X")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let progress = Progress::start(
        Mode::for_output(json),
        &format!("Resizing dynos on ⬢ {app}"),
    );
    let goal = live_goal(&progress, scaled_goal(api, &app, &updates)).await;
    let formation = progress
        .follow(api, &app, &goal, patch_formation(api, &app, updates))
        .await?;
    out(json, &formation, || {
        let now: Vec<String> = formation
            .iter()
            .map(|f| format!("{}={}", f.process_type, f.size))
            .collect();
        format!("done, now {}\n", now.join(", "))
    });
    Ok(())
}

pub(super) async fn ps_stop(
    api: &ApiClient,
    json: bool,
    dyno: String,
    app: String,
) -> Result<(), String> {
    if !json {
        eprint!("Stopping {dyno} on ⬢ {app}... ");
    }
    let done = api.restart(&app, Some(&dyno)).await.map_err(e)?;
    out(json, &done, || "done\n".to_string());
    Ok(())
}

pub(super) async fn ps_restart(
    api: &ApiClient,
    json: bool,
    dyno: Option<String>,
    app: String,
) -> Result<(), String> {
    // Heroku's words: all dynos, all dynos of a type, or one dyno.
    let (action, only_type) = match dyno.as_deref() {
        None => (format!("Restarting all dynos on ⬢ {app}"), None),
        Some(d) => match d.split_once('.') {
            Some((t, _)) => (format!("Restarting dyno {d} on ⬢ {app}"), Some(t)),
            None => (format!("Restarting all {d} dynos on ⬢ {app}"), Some(d)),
        },
    };
    let progress = Progress::start(Mode::for_output(json), &action);
    let goal = live_goal(&progress, async {
        let (version, formation) = progress::current(api, &app).await?;
        let goal = Goal::from_formation(version, &formation);
        Some(match only_type {
            Some(t) => goal.only(t),
            None => goal,
        })
    })
    .await;
    let done = progress
        .follow(api, &app, &goal, api.restart(&app, dyno.as_deref()))
        .await
        .map_err(e)?;
    out(json, &done, || "done\n".to_string());
    Ok(())
}

pub(super) async fn maintenance(
    api: &ApiClient,
    json: bool,
    app: String,
    on: bool,
) -> Result<(), String> {
    if !json {
        eprint!(
            "{} maintenance mode for ⬢ {app}... ",
            if on { "Enabling" } else { "Disabling" }
        );
    }
    let updated = api.update_app(&app, on).await.map_err(e)?;
    out(json, &updated, || "done\n".to_string());
    Ok(())
}

pub(super) async fn run_one_off(
    api: &ApiClient,
    json: bool,
    app: String,
    command: Vec<String>,
    no_tty: bool,
) -> Result<(), String> {
    let command = command.join(" ");
    let tty = !no_tty && super::attach::has_terminal();
    let body = super::attach::one_off(command.clone(), tty);
    let dyno = api.run_with(&app, &body).await.map_err(e)?;
    if !json {
        eprintln!("Running {command} on ⬢ {app}... up, {}", dyno.name);
    }
    let secret = dyno
        .attach_url
        .as_deref()
        .and_then(|url| url.rsplit('/').next())
        .ok_or(
            "the daemon started the one-off without an attach URL; is it older than this CLI?",
        )?;
    let code = super::attach::attach(api, secret, tty).await?;
    // The one-off's status is ours, as a shell's would be.
    std::process::exit(code);
}

/// `run:detached`: the one-off's output goes to the log.
pub(super) async fn run_detached(
    api: &ApiClient,
    json: bool,
    app: String,
    command: Vec<String>,
) -> Result<(), String> {
    let command = command.join(" ");
    let dyno = api.run(&app, &command).await.map_err(e)?;
    out(json, &dyno, || {
        format!(
            "Running {command} on ⬢ {app}... up, {}\nRun `dyno logs -a {app} --dyno {}` to see \
             its output.\n",
            dyno.name, dyno.name
        )
    });
    Ok(())
}

pub(super) async fn drains(api: &ApiClient, json: bool, app: String) -> Result<(), String> {
    let list = api.drains(&app).await.map_err(e)?;
    out(json, &list, || {
        let mut s = format!("=== ⬢ {app} Drains\n");
        for d in &list {
            s.push_str(&format!("{} ({})\n", d.url, d.token));
        }
        s
    });
    Ok(())
}

pub(super) async fn drains_add(
    api: &ApiClient,
    json: bool,
    url: String,
    app: String,
) -> Result<(), String> {
    let drain = api.add_drain(&app, &url).await.map_err(e)?;
    out(json, &drain, || {
        format!("Successfully added drain {}\n", drain.url)
    });
    Ok(())
}

pub(super) async fn drains_remove(
    api: &ApiClient,
    json: bool,
    url_or_token: String,
    app: String,
) -> Result<(), String> {
    // The API removes by token; a URL is looked up first.
    let token = if url_or_token.contains("://") {
        let list = api.drains(&app).await.map_err(e)?;
        list.into_iter()
            .find(|d| d.url == url_or_token)
            .map(|d| d.token)
            .ok_or_else(|| {
                format!("no drain {url_or_token} on {app}; see `dyno drains -a {app}`")
            })?
    } else {
        url_or_token
    };
    let drain = api.remove_drain(&app, &token).await.map_err(e)?;
    out(json, &drain, || {
        format!("Successfully removed drain {}\n", drain.url)
    });
    Ok(())
}

/// Log lines are printed as they are, with `--json` too.
pub(super) async fn logs(
    api: &ApiClient,
    app: String,
    num: usize,
    ps: Option<String>,
    source: Option<String>,
    tail: bool,
) -> Result<(), String> {
    let query = LogQuery {
        n: Some(num),
        ps,
        source,
        tail,
    };
    if tail {
        // A stream: the recent lines, then each new one, until interrupted.
        api.tail_logs(&app, &query, |lines| {
            // One write per batch: a burst of lines is not a write(2) each.
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        })
        .await
        .map_err(e)?;
    } else {
        let lines = api.logs(&app, &query).await.map_err(e)?;
        for line in &lines {
            println!("{line}");
        }
    }
    Ok(())
}

/// Heroku's `ps` time: ` 2026/12/06 10:00:00 +0000 (~ 8m ago)` (the age only within 25 hours);
/// nothing when the daemon sent no time.
fn since(updated_at: &str, now: std::time::SystemTime) -> String {
    let Some(at) = parse_rfc3339(updated_at) else {
        return String::new();
    };
    let shown = format!(
        " {}/{}/{} {} +0000",
        &updated_at[0..4],
        &updated_at[5..7],
        &updated_at[8..10],
        &updated_at[11..19]
    );
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = now.saturating_sub(at);
    let age = match ago {
        a if a >= 25 * 3600 => return shown,
        a if a >= 3600 => format!("{}h", a / 3600),
        a if a >= 60 => format!("{}m", a / 60),
        a => format!("{a}s"),
    };
    format!("{shown} (~ {age} ago)")
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ`, the API's times.
fn parse_rfc3339(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), March-based years.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod since_tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn heroku_ps_times() {
        let at = "2026-12-06T10:00:00Z";
        let t = parse_rfc3339(at).unwrap();
        assert_eq!(t, 1_796_551_200);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("bad"), None);
        let now = |s: u64| UNIX_EPOCH + Duration::from_secs(t + s);
        assert_eq!(since(at, now(480)), " 2026/12/06 10:00:00 +0000 (~ 8m ago)");
        assert_eq!(since(at, now(7)), " 2026/12/06 10:00:00 +0000 (~ 7s ago)");
        assert_eq!(
            since(at, now(3 * 3600)),
            " 2026/12/06 10:00:00 +0000 (~ 3h ago)"
        );
        assert_eq!(since(at, now(30 * 3600)), " 2026/12/06 10:00:00 +0000");
        assert_eq!(since("", now(0)), "");
    }
}
