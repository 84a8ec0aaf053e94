//! Opening an uploaded archive: gzip or plain tar, told apart by the magic bytes, and a cap on
//! how much of the (decompressed) stream the tar reader may consume.
//!
//! The cap exists because the `tar` crate reads a GNU long name or a PAX header into memory
//! whole, and skips the data of members nobody reads: a small gzip could otherwise make the
//! daemon (root) allocate or decompress gigabytes before any of our checks sees a member.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

/// How far past the current member's data the reader may go: the padding, the next member's
/// header and its extension headers (long names, PAX records). 1 MiB is far more than any
/// real archiver writes for one member (a name is at most `PATH_MAX`, 4 KiB).
pub(crate) const HEADER_SLACK: u64 = 1024 * 1024;

/// Shared between the reader inside `tar::Archive` and the unpacker that moves the cap on.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    read: Cell<u64>,
    allowed: Cell<u64>,
    exceeded: Cell<bool>,
    inner_failed: Cell<bool>,
}

impl Budget {
    pub(crate) fn new() -> Rc<Budget> {
        let budget = Budget::default();
        budget.allowed.set(HEADER_SLACK);
        Rc::new(budget)
    }

    /// A member whose header was just read may have `data` bytes read for it, plus the slack
    /// for whatever comes before the next member.
    pub(crate) fn allow(&self, data: u64) {
        // Members are padded to 512-byte blocks.
        let padded = data.saturating_add(511) & !511;
        self.allowed.set(
            self.read
                .get()
                .saturating_add(padded)
                .saturating_add(HEADER_SLACK),
        );
    }

    /// Whether a read failed because of the cap (not because the stream was bad).
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }

    /// Whether a read failed below tar: in gzip (corrupt, cut short) or in the file itself.
    pub(crate) fn inner_failed(&self) -> bool {
        self.inner_failed.get()
    }
}

/// A reader that fails once it has handed out what the [`Budget`] allows.
pub(crate) struct Capped<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self
            .budget
            .allowed
            .get()
            .saturating_sub(self.budget.read.get());
        if room == 0 && !buf.is_empty() {
            self.budget.exceeded.set(true);
            return Err(io::Error::other("member headers over the cap"));
        }
        let want = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        let got = self.inner.read(&mut buf[..want]).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.budget.inner_failed.set(true);
            }
        })?;
        self.budget
            .read
            .set(self.budget.read.get().saturating_add(got as u64));
        Ok(got)
    }
}

/// The stream of tar bytes in `archive`, decompressed if it starts with gzip's magic bytes
/// (whatever its name says: uploads have none we could trust).
pub(crate) fn open(archive: &Path, budget: Rc<Budget>) -> io::Result<Capped<Box<dyn Read>>> {
    let mut file = BufReader::new(File::open(archive)?);
    let gzip = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let inner: Box<dyn Read> = if gzip {
        // Multi-member, as gzip(1) reads concatenated files.
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Capped { inner, budget })
}
