//! How big a built app's slug is, as Heroku limits it: 500 MB once compressed. Compressing a
//! tree costs seconds per hundred megabytes, so the tree is compressed only when its plain
//! size does not already prove it small enough, and then only until it is proved too big.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

/// Heroku's limit on a compressed slug.
pub const DEFAULT_SLUG_LIMIT: u64 = 500 * 1000 * 1000;

/// A slug's compressed size, or a bound on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlugSize {
    /// With `exact`, the gzip'd tar's size (or, when over the limit, how far compression got
    /// before it passed the limit, so some byte count above it). Without, a bound the
    /// compressed size cannot exceed.
    pub bytes: u64,
    pub exact: bool,
}

/// The compressed size of a slug made of `dir` (symlinks are not followed), as far as it
/// matters against `limit`: a bound (`exact: false`) when the tree is small enough without
/// compressing, otherwise the size of a gzip'd tar (fast level, like the slug itself), whose
/// compression stops as soon as it passes `limit`.
pub fn compressed_size(dir: &Path, limit: u64) -> io::Result<SlugSize> {
    let bound = tar_bound(dir)?;
    // Deflate falls back to stored blocks (5 bytes per 64 KiB) on data it cannot shrink, and
    // gzip adds a 10-byte header and an 8-byte trailer: 1/1000 more is ample.
    let bound = bound.saturating_add(bound / 1000).saturating_add(64);
    if bound <= limit {
        return Ok(SlugSize {
            bytes: bound,
            exact: false,
        });
    }
    let mut sink = Counting { count: 0, limit };
    let packed = pack(dir, &mut sink);
    match packed {
        Ok(()) => Ok(SlugSize {
            bytes: sink.count,
            exact: true,
        }),
        Err(_) if sink.count > limit => Ok(SlugSize {
            bytes: sink.count,
            exact: true,
        }),
        Err(e) => Err(e),
    }
}

/// Tar writes one 512-byte header per member, the data padded to 512 bytes, a long-name
/// member before any name or link target over 100 bytes, and two zero blocks at the end.
fn tar_bound(dir: &Path) -> io::Result<u64> {
    fn padded(n: u64) -> u64 {
        n.saturating_add(511) & !511
    }
    fn long_name(len: usize) -> u64 {
        if len > 100 {
            512 + padded(len as u64 + 1)
        } else {
            0
        }
    }
    let mut total = 1024u64;
    walk(dir, &mut |rel, meta| {
        let name = rel.as_os_str().len() + usize::from(meta.is_dir());
        let mut one = 512 + long_name(name);
        if meta.is_file() {
            one = one.saturating_add(padded(meta.len()));
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(dir.join(rel))?;
            one += long_name(target.as_os_str().len());
        }
        total = total.saturating_add(one);
        Ok(())
    })?;
    Ok(total)
}

/// Calls `each` with the path relative to `dir` and the lstat of everything under `dir`
/// (directories before their contents; special files are skipped, as a slug has none).
fn walk(
    dir: &Path,
    each: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            // DirEntry::metadata is an lstat: links are measured, never followed.
            let meta = entry.metadata()?;
            let path = rel.join(entry.file_name());
            let ty = meta.file_type();
            if !(ty.is_file() || ty.is_dir() || ty.is_symlink()) {
                continue;
            }
            each(&path, &meta)?;
            if ty.is_dir() {
                todo.push(path);
            }
        }
    }
    Ok(())
}

/// Tars and gzips `dir` into `sink`.
fn pack(dir: &Path, sink: &mut Counting) -> io::Result<()> {
    let mut tar = tar::Builder::new(GzEncoder::new(sink, Compression::fast()));
    tar.follow_symlinks(false);
    walk(dir, &mut |rel, _| {
        tar.append_path_with_name(dir.join(rel), rel)
    })?;
    tar.into_inner()?.finish()?;
    Ok(())
}

/// Counts what is written and fails once the count passes the limit, which ends the tar
/// and the compression early.
struct Counting {
    count: u64,
    limit: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.count > self.limit {
            return Err(io::Error::other("over the slug limit"));
        }
        self.count = self.count.saturating_add(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A size as Heroku prints one (`Compressing... done, 25.1M`): decimal units, whole
/// kilobytes, one decimal from megabytes on (none when it is `.0`).
pub fn human(bytes: u64) -> String {
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let kilo = (bytes as f64 / 1000.0).round();
    if kilo < 1000.0 {
        return format!("{kilo:.0}K");
    }
    // Rounded as printed, so 999.96M reads 1G, not 1000M.
    let tenths = |v: f64| (v * 10.0).round() / 10.0;
    let mut value = bytes as f64 / 1e6;
    let mut unit = "M";
    for bigger in ["G", "T", "P"] {
        if tenths(value) < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = bigger;
    }
    let value = tenths(value);
    if value.fract() == 0.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("dyno-build-slug-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Bytes gzip cannot shrink (xorshift: no dependency, same bytes every run).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn small_tree_is_a_bound_without_compressing() {
        let t = TempDir::new("small");
        fs::create_dir(t.0.join("bin")).unwrap();
        fs::write(t.0.join("bin/app"), vec![b'a'; 10_000]).unwrap();
        std::os::unix::fs::symlink("bin/app", t.0.join("app")).unwrap();
        let size = compressed_size(&t.0, DEFAULT_SLUG_LIMIT).unwrap();
        assert!(!size.exact);
        // 10 000 bytes of data plus headers, end blocks and gzip's worst case.
        assert!(size.bytes >= 10_000 && size.bytes < 20_000, "{size:?}");
    }

    #[test]
    fn bound_holds_for_incompressible_data() {
        let t = TempDir::new("bound");
        for i in 0..20 {
            fs::write(t.0.join(format!("f{i}")), noise(3000 + i * 7, i as u64 + 1)).unwrap();
        }
        let bound = compressed_size(&t.0, u64::MAX).unwrap();
        assert!(!bound.exact);
        let exact = compressed_size(&t.0, 0).unwrap();
        assert!(exact.exact);
        let mut sink = Counting {
            count: 0,
            limit: u64::MAX,
        };
        pack(&t.0, &mut sink).unwrap();
        assert!(sink.count <= bound.bytes, "{} > {bound:?}", sink.count);
    }

    #[test]
    fn compressible_tree_over_the_plain_limit_is_measured_exactly() {
        let t = TempDir::new("compressible");
        fs::write(t.0.join("zeros"), vec![0u8; 2_000_000]).unwrap();
        let size = compressed_size(&t.0, 1_000_000).unwrap();
        assert!(size.exact);
        assert!(size.bytes < 100_000, "{size:?}");
    }

    #[test]
    fn incompressible_tree_stops_past_the_limit() {
        let t = TempDir::new("incompressible");
        fs::write(t.0.join("noise"), noise(3_000_000, 7)).unwrap();
        let size = compressed_size(&t.0, 1_000_000).unwrap();
        assert!(size.exact);
        assert!(size.bytes > 1_000_000, "{size:?}");
        // Stopped early: nowhere near the 3 MB a full compression would have written.
        assert!(size.bytes < 1_500_000, "{size:?}");
    }

    #[test]
    fn symlinks_are_not_followed() {
        let t = TempDir::new("symlinks");
        let big = TempDir::new("symlinks-target");
        fs::write(big.0.join("big"), noise(2_000_000, 3)).unwrap();
        std::os::unix::fs::symlink(big.0.join("big"), t.0.join("link")).unwrap();
        std::os::unix::fs::symlink(&big.0, t.0.join("dirlink")).unwrap();
        let size = compressed_size(&t.0, 1_000_000).unwrap();
        assert!(!size.exact);
        assert!(size.bytes < 10_000, "{size:?}");
    }

    #[test]
    fn missing_dir_is_an_error() {
        let t = TempDir::new("missing");
        assert!(compressed_size(&t.0.join("nope"), 10).is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(999), "999B");
        assert_eq!(human(1000), "1K");
        assert_eq!(human(812_345), "812K");
        assert_eq!(human(999_600), "1M");
        assert_eq!(human(25_100_000), "25.1M");
        assert_eq!(human(25_149_999), "25.1M");
        assert_eq!(human(DEFAULT_SLUG_LIMIT), "500M");
        assert_eq!(human(2 * 1024 * 1024 * 1024), "2.1G");
        assert_eq!(human(999_960_000), "1G");
        assert_eq!(human(u64::MAX), "18446.7P");
    }
}
