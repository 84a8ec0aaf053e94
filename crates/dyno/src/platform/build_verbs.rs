//! `dyno builds`, `builds:info`, `builds:cache:purge` and `buildpacks[:add|:set|:remove|:clear]`,
//! in the shapes of Heroku's CLI (`heroku buildpacks` prints the same list).

use std::path::{Path, PathBuf};

use dyno_api::ApiClient;

use super::out;
use super::verbs::e;

/// `dyno deploy DIR`: DIR as a tarball (without `.git`), uploaded, built; the build's output
/// as it comes, then the release it made.
pub(super) async fn deploy(
    api: &ApiClient,
    json: bool,
    dir: PathBuf,
    app: String,
) -> Result<(), String> {
    let dir = dir
        .canonicalize()
        .map_err(|err| format!("{}: {err}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let archive = {
        let packed = dir.clone();
        tokio::task::spawn_blocking(move || source_tarball(&packed))
            .await
            .map_err(|err| err.to_string())?
            .map_err(|err| format!("could not pack {}: {err}", dir.display()))?
    };
    if !json {
        eprintln!(
            "Uploading {} ({} KB) to ⬢ {app}...",
            dir.display(),
            archive.len().div_ceil(1024)
        );
    }
    let build = api
        .build_archive(&app, archive.into(), None)
        .await
        .map_err(e)?;
    // The build's lines go to stderr (stdout is the result); the last ` !     ` line says
    // why a build or its release failed.
    let mut last_problem = None;
    api.stream_build_output(&build.output_stream_url, |lines| {
        if let Some(problem) = lines.iter().rev().find(|l| l.starts_with(" !     ")) {
            last_problem = Some(problem.trim_start_matches(" !     ").to_string());
        }
        if json {
            return;
        }
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        use std::io::Write;
        let _ = std::io::stderr().write_all(text.as_bytes());
    })
    .await
    .map_err(e)?;
    let build = api.settled_build(&app, &build.id).await.map_err(e)?;
    if build.status != "succeeded" {
        return Err(format!(
            "the build failed; nothing was released (see the lines above, or `dyno builds:info \
             {} -a {app}`)",
            build.id
        ));
    }
    let release = match &build.release {
        Some(release) => api.release(&app, &release.id).await.map_err(e)?,
        None => return Err(format!("the build {} made no release", build.id)),
    };
    if release.status == "failed" {
        return Err(last_problem.unwrap_or_else(|| format!("release v{} failed", release.version)));
    }
    out(json, &release, || {
        format!("done, v{} ({})\n", release.version, release.description)
    });
    Ok(())
}

/// A gzipped tarball of `dir`'s files (symlinks as links), without `.git`.
fn source_tarball(dir: &Path) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            tar.append_dir_all(&name, &path)?;
        } else {
            tar.append_path_with_name(&path, &name)?;
        }
    }
    tar.into_inner()?.finish()
}

pub(super) async fn builds(api: &ApiClient, json: bool, app: String) -> Result<(), String> {
    let list = api.builds(&app).await.map_err(e)?;
    out(json, &list, || {
        let mut s = format!("=== ⬢ {app} Builds\n");
        for b in &list {
            let version = b.source_blob.version.as_deref().unwrap_or("");
            s.push_str(&format!(
                "{}  {:<9}  {}  {}\n",
                b.id, b.status, b.created_at, version
            ));
        }
        s
    });
    Ok(())
}

pub(super) async fn builds_info(
    api: &ApiClient,
    json: bool,
    id: Option<String>,
    app: String,
) -> Result<(), String> {
    let build =
        match id {
            Some(id) => api.build(&app, &id).await.map_err(e)?,
            None => api.builds(&app).await.map_err(e)?.pop().ok_or_else(|| {
                format!("{app} has no builds yet: `git push` or `dyno deploy` one")
            })?,
        };
    let mut text = String::new();
    api.stream_build_output(&build.output_stream_url, |lines| {
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
    })
    .await
    .map_err(e)?;
    // The status after the output: a build that was running has ended meanwhile.
    let build = api.settled_build(&app, &build.id).await.map_err(e)?;
    out(json, &build, || {
        format!(
            "=== Build {}\nStatus:     {}\nCreated:    {}\nVersion:    {}\nBuildpacks: {}\n\n{text}",
            build.id,
            build.status,
            build.created_at,
            build.source_blob.version.as_deref().unwrap_or(""),
            build
                .buildpacks
                .iter()
                .flatten()
                .map(|b| b.url.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    });
    Ok(())
}

pub(super) async fn cache_purge(api: &ApiClient, json: bool, app: String) -> Result<(), String> {
    api.purge_build_cache(&app).await.map_err(e)?;
    out(json, &serde_json::json!({}), || {
        format!("Purging build cache for ⬢ {app}... done\n")
    });
    Ok(())
}

/// What a `buildpacks` verb changes.
pub(super) enum Change {
    None,
    /// A buildpack, at a place (1 first; default last).
    Add(String, Option<usize>),
    Set(String),
    /// By URL or place.
    Remove(Option<String>, Option<usize>),
    Clear,
}

pub(super) async fn buildpacks(
    api: &ApiClient,
    json: bool,
    app: String,
    change: Change,
) -> Result<(), String> {
    let now: Vec<String> = api
        .buildpacks(&app)
        .await
        .map_err(e)?
        .into_iter()
        .map(|b| b.buildpack.url)
        .collect();
    let next = changed(&now, change)?;
    let list = match next {
        Some(urls) => api.set_buildpacks(&app, &urls).await.map_err(e)?,
        None => api.buildpacks(&app).await.map_err(e)?,
    };
    out(json, &list, || {
        if list.is_empty() {
            return format!(
                "⬢ {app} has no buildpacks set: each build tries the installed ones in order.\n"
            );
        }
        let mut s = format!(
            "=== ⬢ {app} Buildpack URL{}\n",
            if list.len() > 1 { "s" } else { "" }
        );
        for b in &list {
            if list.len() > 1 {
                s.push_str(&format!("{}. {}\n", b.ordinal + 1, b.buildpack.url));
            } else {
                s.push_str(&format!("{}\n", b.buildpack.url));
            }
        }
        s
    });
    Ok(())
}

/// The list after `change`; `None`: unchanged (a listing).
fn changed(now: &[String], change: Change) -> Result<Option<Vec<String>>, String> {
    let mut urls = now.to_vec();
    match change {
        Change::None => return Ok(None),
        Change::Clear => urls.clear(),
        Change::Set(url) => urls = vec![url],
        Change::Add(url, index) => {
            if urls.contains(&url) {
                return Err(format!("The buildpack {url} is already set on the app."));
            }
            let at = match index {
                Some(0) => return Err("--index starts at 1".to_string()),
                Some(i) => (i - 1).min(urls.len()),
                None => urls.len(),
            };
            urls.insert(at, url);
        }
        Change::Remove(url, index) => {
            let at = match (url, index) {
                (Some(url), None) => urls
                    .iter()
                    .position(|u| *u == url)
                    .ok_or_else(|| format!("The buildpack {url} is not set on the app."))?,
                (None, Some(i)) if (1..=urls.len()).contains(&i) => i - 1,
                (None, Some(i)) => {
                    return Err(format!(
                        "Invalid index {i}: the app has {} buildpacks.",
                        urls.len()
                    ))
                }
                _ => return Err("Give a buildpack URL or --index (not both).".to_string()),
            };
            urls.remove(at);
        }
    }
    Ok(Some(urls))
}

#[cfg(test)]
mod tests {
    use super::{changed, Change};

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn changes_to_the_list() {
        let now = v(&["a", "b"]);
        assert_eq!(changed(&now, Change::None).unwrap(), None);
        assert_eq!(
            changed(&now, Change::Add("c".into(), Some(1))).unwrap(),
            Some(v(&["c", "a", "b"]))
        );
        assert_eq!(
            changed(&now, Change::Add("c".into(), None)).unwrap(),
            Some(v(&["a", "b", "c"]))
        );
        assert!(changed(&now, Change::Add("a".into(), None)).is_err());
        assert_eq!(
            changed(&now, Change::Remove(None, Some(2))).unwrap(),
            Some(v(&["a"]))
        );
        assert!(changed(&now, Change::Remove(None, Some(3))).is_err());
        assert!(changed(&now, Change::Remove(Some("z".into()), None)).is_err());
        assert_eq!(
            changed(&now, Change::Set("z".into())).unwrap(),
            Some(v(&["z"]))
        );
        assert_eq!(changed(&now, Change::Clear).unwrap(), Some(v(&[])));
    }
}
