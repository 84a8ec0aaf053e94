//! The member-by-member unpacker behind [`super::unpack`].

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use tar::EntryType;

use super::paths::{components, link_stays_inside, under};
use super::stream::{Budget, HEADER_SLACK};
use super::{ArchiveError, Exceeded, Limits, Unpacked};

/// What a member makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
}

impl Kind {
    /// The member's type, or the words for one we refuse.
    fn of(ty: EntryType) -> Result<Kind, String> {
        Ok(match ty {
            // Contiguous files are regular files to every archiver but the one that wrote them.
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::HardLink,
            EntryType::Char => return Err("a character device".into()),
            EntryType::Block => return Err("a block device".into()),
            EntryType::Fifo => return Err("a FIFO (named pipe)".into()),
            EntryType::GNUSparse => return Err("a sparse file".into()),
            // The tar crate consumes these itself in GNU and ustar archives; one that reaches
            // us sits in an old-style header and would be taken for a file by no archiver.
            EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {
                return Err("a stray extension header".into())
            }
            other => return Err(format!("of unknown type {:?}", other.as_byte() as char)),
        })
    }

    fn words(existing: fs::FileType) -> &'static str {
        if existing.is_dir() {
            "a directory"
        } else if existing.is_symlink() {
            "a symlink"
        } else {
            "a file"
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kind::File => "a file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::HardLink => "a hard link",
        }
    }
}

/// Mode and mtime a directory gets once every member is in (writing into it changes both).
#[derive(Debug, Clone, Copy)]
struct DirMeta {
    mode: u32,
    mtime: Option<SystemTime>,
}

/// A directory the archive did not list but a member needed.
const IMPLIED_DIR: DirMeta = DirMeta {
    mode: 0o755,
    mtime: None,
};

/// Files keep the archive's bits less group/other write and setuid/setgid/sticky, plus owner
/// write so the build (as the app's user, after the chown) can change its own files.
fn file_mode(mode: u32) -> u32 {
    (mode & 0o755) | 0o200
}

/// Directories also keep owner read and search: one the owner cannot enter breaks the build
/// and the slug's packing alike.
fn dir_mode(mode: u32) -> u32 {
    (mode & 0o755) | 0o700
}

fn shown(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) struct Unpacker<'a> {
    dest: &'a Path,
    limits: Limits,
    budget: Rc<Budget>,
    /// Every directory made so far (relative to `dest`). Directories are never replaced nor
    /// removed, so one in here is known to be a real directory without another lstat.
    dirs: BTreeMap<PathBuf, DirMeta>,
    /// Every symlink made (its components, its target), checked again at the end.
    links: Vec<(Vec<OsString>, Vec<u8>)>,
    seen: u64,
    done: Unpacked,
    buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    pub(super) fn new(dest: &'a Path, limits: Limits, budget: Rc<Budget>) -> Unpacker<'a> {
        Unpacker {
            dest,
            limits,
            budget,
            dirs: BTreeMap::new(),
            links: Vec::new(),
            seen: 0,
            done: Unpacked::default(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// Reads the whole stream, then gives directories their modes and checks every symlink
    /// against the finished tree.
    pub(super) fn run<R: Read>(mut self, reader: R) -> Result<Unpacked, ArchiveError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.stream_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.stream_error(e))?;
            self.seen += 1;
            if self.seen > self.limits.max_entries {
                return Err(ArchiveError::TooLarge(Exceeded::Entries {
                    max: self.limits.max_entries,
                }));
            }
            self.member(&mut entry)?;
        }
        self.finish()
    }

    /// A read of the stream failed: over our cap, or not a tar (garbage, truncated, corrupt
    /// gzip). Writes into `dest` never come through here. The tar crate's own messages can
    /// quote the header's raw bytes, so the user gets our words instead.
    fn stream_error(&self, e: io::Error) -> ArchiveError {
        if self.budget.exceeded() {
            return ArchiveError::TooLarge(Exceeded::Headers { max: HEADER_SLACK });
        }
        let text = e.to_string();
        let why = if self.budget.inner_failed() {
            // flate2's and the kernel's messages are plain words.
            format!("its compressed data is damaged or cut short ({text})")
        } else if e.kind() == io::ErrorKind::UnexpectedEof
            || text.contains("entire block")
            || text.contains("EOF")
        {
            if self.seen == 0 {
                "it is shorter than one tar header".to_string()
            } else {
                "it ends in the middle of a member (cut short?)".to_string()
            }
        } else if self.seen == 0 {
            "it does not start with a tar header".to_string()
        } else {
            format!("the header after member {} is damaged", self.seen)
        };
        ArchiveError::NotAnArchive(why)
    }

    fn member<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ArchiveError> {
        let ty = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let kind = Kind::of(ty);
        let size = entry.size();
        // Only a file's data is ever read; anything else a member carries must fit the slack.
        let room = self.limits.max_bytes.saturating_sub(self.done.bytes);
        self.budget
            .allow(if kind == Ok(Kind::File) && size <= room {
                size
            } else {
                0
            });
        if ty == EntryType::XGlobalHeader {
            // Archive-wide PAX defaults (git archive writes a commit id): nothing to make.
            return Ok(());
        }
        let kind = kind.map_err(|kind| ArchiveError::Unsupported {
            path: shown(&raw),
            kind,
        })?;
        let parts = components(&raw).map_err(|bad| ArchiveError::BadPath {
            path: shown(&raw),
            why: bad.why(),
        })?;
        let Some((_, parents)) = parts.split_last() else {
            if kind == Kind::Dir {
                // `.` itself, as `tar czf - .` writes it first: dest is the caller's.
                return Ok(());
            }
            return Err(ArchiveError::BadPath {
                path: shown(&raw),
                why: "it names the app's directory itself",
            });
        };
        self.parents(&raw, parents)?;
        let path = under(self.dest, &parts);
        let existing = match fs::symlink_metadata(&path) {
            Ok(meta) => Some(meta.file_type()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&path)(e)),
        };
        // Only a file may replace a file (a later copy of it, as `tar -r` appends), and a
        // directory may be listed again; everything else would swap what an earlier member
        // (a link's check, a hard link) relied on.
        match (existing, kind) {
            (None, _) => {}
            (Some(t), Kind::Dir) if t.is_dir() => {}
            (Some(t), Kind::File | Kind::HardLink) if t.is_file() => {}
            (Some(t), _) => {
                return Err(ArchiveError::Conflict {
                    path: shown(&raw),
                    earlier: Kind::words(t),
                    later: kind.word(),
                })
            }
        }
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| ArchiveError::NotAnArchive(format!("`{}`: {e}", shown(&raw))))?;
        // GNU headers can carry any 64-bit time: one SystemTime cannot hold is dropped.
        let mtime = header
            .mtime()
            .ok()
            .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)));
        match kind {
            Kind::Dir => {
                if existing.is_none() {
                    fs::create_dir(&path).map_err(io_error(&path))?;
                }
                let meta = DirMeta {
                    mode: dir_mode(mode),
                    mtime,
                };
                self.dirs.insert(PathBuf::from_iter(&parts), meta);
            }
            Kind::File => {
                if existing.is_some() {
                    // Unlink, never truncate: the old file may have hard links of its own.
                    fs::remove_file(&path).map_err(io_error(&path))?;
                }
                self.file(entry, &raw, &path, size, mode, mtime)?;
            }
            Kind::Symlink => self.symlink(entry, &raw, &parts, &path)?,
            Kind::HardLink => self.hard_link(entry, &raw, &parts, &path, existing.is_some())?,
        }
        self.done.entries += 1;
        Ok(())
    }

    /// Makes the directories `parents` (of the member `raw`) that do not exist yet, and
    /// refuses if one of them is a symlink or a file.
    fn parents(&mut self, raw: &[u8], parents: &[&OsStr]) -> Result<(), ArchiveError> {
        let mut rel = PathBuf::new();
        for part in parents {
            rel.push(part);
            if self.dirs.contains_key(&rel) {
                continue;
            }
            let path = self.dest.join(&rel);
            match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(io_error(&path))?;
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ArchiveError::ThroughSymlink {
                        path: shown(raw),
                        link: rel.to_string_lossy().into_owned(),
                    })
                }
                Ok(meta) => {
                    return Err(ArchiveError::Conflict {
                        path: rel.to_string_lossy().into_owned(),
                        earlier: Kind::words(meta.file_type()),
                        later: "a directory",
                    })
                }
                Err(e) => return Err(io_error(&path)(e)),
            }
            self.dirs.insert(rel.clone(), IMPLIED_DIR);
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        path: &Path,
        size: u64,
        mode: u32,
        mtime: Option<SystemTime>,
    ) -> Result<(), ArchiveError> {
        let max = self.limits.max_bytes;
        if size > max.saturating_sub(self.done.bytes) {
            return Err(ArchiveError::TooLarge(Exceeded::Bytes { max }));
        }
        // O_NOFOLLOW and O_EXCL: even if a link appeared at `path` since the lstat, the
        // open fails instead of writing through it.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_error(path))?;
        let mut written = 0u64;
        loop {
            // Read errors are the archive's (corrupt or truncated); write errors are ours.
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_error(e)),
            };
            out.write_all(&self.buf[..n]).map_err(io_error(path))?;
            written += n as u64;
        }
        if written != size {
            return Err(ArchiveError::NotAnArchive(format!(
                "`{}` is cut short (the archive is truncated)",
                shown(raw)
            )));
        }
        self.done.bytes += written;
        out.set_permissions(fs::Permissions::from_mode(file_mode(mode)))
            .map_err(io_error(path))?;
        if let Some(mtime) = mtime {
            // Best effort: a time the filesystem cannot store is no reason to refuse a
            // source, and nothing in a build depends on it.
            let _ = out.set_modified(mtime);
        }
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        raw: &[u8],
        parts: &[&OsStr],
        path: &Path,
    ) -> Result<(), ArchiveError> {
        let target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        if target.is_empty() {
            return Err(ArchiveError::BadPath {
                path: shown(raw),
                why: "it is a symlink without a target",
            });
        }
        let whole: Vec<OsString> = parts.iter().map(|p| p.to_os_string()).collect();
        let dir = &whole[..whole.len().saturating_sub(1)];
        if target.contains(&0) || !link_stays_inside(self.dest, dir, &target) {
            return Err(ArchiveError::Escapes {
                path: shown(raw),
                target: shown(&target),
            });
        }
        std::os::unix::fs::symlink(OsStr::from_bytes(&target), path).map_err(io_error(path))?;
        self.links.push((whole, target));
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        raw: &[u8],
        parts: &[&OsStr],
        path: &Path,
        replaces: bool,
    ) -> Result<(), ArchiveError> {
        let target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let refused = || ArchiveError::HardLink {
            path: shown(raw),
            target: shown(&target),
        };
        // Hard link targets are names in the archive, relative to its root.
        let Ok(to) = components(&target) else {
            return Err(ArchiveError::Escapes {
                path: shown(raw),
                target: shown(&target),
            });
        };
        let Some((_, to_parents)) = to.split_last() else {
            return Err(refused());
        };
        // Every parent a directory this unpack made, and the target a file: a link can then
        // only ever share an inode of this tree.
        let mut rel = PathBuf::new();
        for part in to_parents {
            rel.push(part);
            if !self.dirs.contains_key(&rel) {
                return Err(refused());
            }
        }
        let from = under(self.dest, &to);
        match fs::symlink_metadata(&from) {
            Ok(meta) if meta.is_file() => {}
            _ => return Err(refused()),
        }
        if to == parts {
            // A file linked to itself (some archivers write this for `tar -r` of a
            // hard-linked file): it is already there.
            return Ok(());
        }
        if replaces {
            fs::remove_file(path).map_err(io_error(path))?;
        }
        // linkat without AT_SYMLINK_FOLLOW: `from` is taken as it is, never dereferenced.
        fs::hard_link(&from, path).map_err(io_error(path))?;
        Ok(())
    }

    /// Gives directories their modes and times (last: writing into them changed both), and
    /// checks every symlink against the finished tree: a later member may have made a path
    /// that an earlier link's `..` climbs through differently.
    fn finish(self) -> Result<Unpacked, ArchiveError> {
        for (parts, target) in &self.links {
            let dir = &parts[..parts.len().saturating_sub(1)];
            if !link_stays_inside(self.dest, dir, target) {
                return Err(ArchiveError::Escapes {
                    path: PathBuf::from_iter(parts).to_string_lossy().into_owned(),
                    target: shown(target),
                });
            }
        }
        for (rel, meta) in &self.dirs {
            let path = self.dest.join(rel);
            // Through a descriptor opened without following links: chmod(2) would follow one.
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_error(&path))?;
            dir.set_permissions(fs::Permissions::from_mode(meta.mode))
                .map_err(io_error(&path))?;
            if let Some(mtime) = meta.mtime {
                // Best effort, as for files.
                let _ = dir.set_modified(mtime);
            }
        }
        Ok(self.done)
    }
}
