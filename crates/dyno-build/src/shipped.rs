//! The buildpacks shipped with dyno (`buildpacks/` of the repository), compiled into the binary
//! so a daemon has them wherever it runs: `python` (a virtualenv from `requirements.txt`) and
//! `procfile` (apps that need no build). Detection tries them in this order, after the
//! operator's own.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A shipped buildpack: its name and its `bin/` scripts.
pub struct Shipped {
    pub name: &'static str,
    pub scripts: [(&'static str, &'static str); 3],
}

/// In detection order: a Python app has a Procfile too, so `procfile` comes last.
pub const SHIPPED: [Shipped; 2] = [
    Shipped {
        name: "python",
        scripts: [
            (
                "detect",
                include_str!("../../../buildpacks/python/bin/detect"),
            ),
            (
                "compile",
                include_str!("../../../buildpacks/python/bin/compile"),
            ),
            (
                "release",
                include_str!("../../../buildpacks/python/bin/release"),
            ),
        ],
    },
    Shipped {
        name: "procfile",
        scripts: [
            (
                "detect",
                include_str!("../../../buildpacks/procfile/bin/detect"),
            ),
            (
                "compile",
                include_str!("../../../buildpacks/procfile/bin/compile"),
            ),
            (
                "release",
                include_str!("../../../buildpacks/procfile/bin/release"),
            ),
        ],
    },
];

/// Writes the shipped buildpacks under `dir` (`dir/python/bin/detect`, …), replacing what an
/// older binary wrote; their names and directories, in detection order.
pub fn install(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut installed = Vec::new();
    for pack in &SHIPPED {
        let root = dir.join(pack.name);
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin)?;
        for (name, text) in pack.scripts {
            let path = bin.join(name);
            let partial = bin.join(format!(".{name}.new"));
            std::fs::write(&partial, text)?;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&partial, &path)?;
        }
        installed.push((pack.name.to_string(), root));
    }
    Ok(installed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn installs_executable_scripts_in_detection_order() {
        let dir = std::env::temp_dir().join(format!("dyno-shipped-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let installed = super::install(&dir).unwrap();
        let names: Vec<&str> = installed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["python", "procfile"]);
        for (_, root) in &installed {
            for script in ["detect", "compile", "release"] {
                let meta = std::fs::metadata(root.join("bin").join(script)).unwrap();
                assert_eq!(
                    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
                    0o755
                );
            }
        }
        // Again: replaced in place.
        super::install(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
