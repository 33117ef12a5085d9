//! Safe reading of untrusted zip archives.
//!
//! Nothing in an archive is trusted: not the names, not the file types, not the sizes in
//! the headers. [`inspect`] validates every entry before anything is extracted, and
//! [`extract`] and [`read_file`] count the bytes they actually decompress, stopping as soon
//! as an entry crosses a limit or its own declared size. The declared sizes were checked
//! against the limits up front, so a zip bomb whose headers lie is caught within one read
//! buffer of the size it claims, long before it could fill a disk.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use zip::read::ZipFile;
use zip::{CompressionMethod, ZipArchive};

use super::PackageError;

/// Entries expanding to at most this many bytes are exempt from the ratio check: small
/// files of zeros or repeated text legitimately compress far better than 200:1, and a
/// megabyte is harmless however it was compressed.
const RATIO_THRESHOLD: u64 = 1024 * 1024;

/// The read buffer size, which is also how far past a limit extraction may read before it
/// notices.
const CHUNK: usize = 64 * 1024;

/// The most memory reserved up front for an entry read into memory; beyond this the buffer
/// grows with the bytes actually decompressed.
const PREALLOCATE_AT_MOST: u64 = 1024 * 1024;

/// The longest accepted path, in bytes. Sandboxes nest these paths below their own root, so
/// this stays well under the usual 4096-byte `PATH_MAX`.
const MAX_PATH_LEN: usize = 1024;

/// The longest accepted path component, in bytes: the file-name limit of common file systems.
const MAX_COMPONENT_LEN: usize = 255;

/// The signature of a central directory file header.
const CENTRAL_HEADER_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];

/// The fixed part of a central directory file header, in bytes.
const CENTRAL_HEADER_LEN: usize = 46;

const S_IFMT: u32 = 0o170_000;
const S_IFIFO: u32 = 0o010_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFSOCK: u32 = 0o140_000;

/// Limits applied to every archive read by this module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveLimits {
    /// The most entries (files and folders) an archive may hold. Default 10,000.
    pub max_entries: usize,
    /// The most bytes all entries together may expand to. Default 1 GiB.
    pub max_total_size: u64,
    /// The most bytes a single entry may expand to. Default 512 MiB.
    pub max_entry_size: u64,
    /// The largest expanded/compressed ratio allowed for an entry that expands to more than
    /// 1 MiB. Default 200; ordinary data rarely exceeds 20.
    pub max_ratio: u64,
    /// The largest splitter or processor component, in bytes. Default 64 MiB.
    pub max_component_size: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_entries: 10_000,
            max_total_size: 1024 * 1024 * 1024,
            max_entry_size: 512 * 1024 * 1024,
            max_ratio: 200,
            max_component_size: 64 * 1024 * 1024,
        }
    }
}

/// One validated entry of an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// The normalised path: relative, `/`-separated, without `.` or empty components and
    /// without a trailing `/`.
    pub path: String,
    /// The expanded size declared by the archive; 0 for folders. [`extract`] and
    /// [`read_file`] fail if the actual size differs.
    pub size: u64,
    /// Whether the entry is a folder.
    pub is_dir: bool,
}

/// Checks that `name` is a safe relative path and returns it normalised.
///
/// The rules, shared by archive entry names, job input names and task output paths:
/// not empty; at most 1024 bytes, and at most 255 bytes per component; no control
/// characters (NUL included); not absolute (no leading `/` or `\`); no drive letter
/// (`C:`); no backslash anywhere; no `..` component. Empty and `.` components are
/// dropped, as is a trailing `/`, so `a/./b//c/` becomes `a/b/c`. A name that normalises
/// to nothing (such as `.`) is rejected.
pub fn check_relative_path(name: &str) -> Result<String, PackageError> {
    let reject = |reason: String| PackageError::UnsafePath {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(reject("the name is empty".to_owned()));
    }
    if name.len() > MAX_PATH_LEN {
        return Err(reject(format!(
            "it is {} bytes long; at most {MAX_PATH_LEN} are allowed",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(reject(format!(
            "it contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(reject("it is an absolute path".to_owned()));
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(reject("it contains a `..` component".to_owned())),
            _ if part.len() > MAX_COMPONENT_LEN => {
                return Err(reject(format!(
                    "a component is {} bytes long; at most {MAX_COMPONENT_LEN} are allowed",
                    part.len()
                )));
            }
            _ => parts.push(part),
        }
    }
    let Some(first) = parts.first() else {
        return Err(reject("it names no file or folder".to_owned()));
    };
    // Checked after normalisation, so that `./C:/x` cannot become `C:/x`.
    let mut chars = first.chars();
    if let (Some(letter), Some(':')) = (chars.next(), chars.next())
        && letter.is_ascii_alphabetic()
    {
        return Err(reject("it starts with a drive letter".to_owned()));
    }
    if name.contains('\\') {
        return Err(reject(
            "it contains a backslash; separate folders with `/`".to_owned(),
        ));
    }
    Ok(parts.join("/"))
}

/// Validates every entry of the zip at `path` without extracting anything.
///
/// Rejects archives that are not zips or are truncated; more than `limits.max_entries`
/// entries; unsafe names (see [`check_relative_path`]); symbolic links and any other entry
/// that is neither a regular file nor a folder; encrypted entries; compression methods other
/// than stored and deflate; names that repeat after normalisation, including a file and a
/// folder with the same name; and declared sizes or ratios beyond the limits. Returns the
/// entries in archive order.
pub fn inspect(path: &Path, limits: &ArchiveLimits) -> Result<Vec<ArchiveEntry>, PackageError> {
    Ok(Validated::open(path, limits)?.entries)
}

/// Validates the zip at `path` as [`inspect`] does, then extracts it into `dest`.
///
/// `dest` must be an existing, empty folder. Only folders and regular files are created;
/// files get mode 0o644, or 0o755 when the entry's unix mode has any execute bit. The
/// entry, total and ratio limits are enforced on the bytes actually decompressed, and an
/// entry whose content differs in size from its header is rejected as corrupt. Nothing is
/// ever written outside `dest`, and existing files are never overwritten. On any error
/// everything written is removed, so `dest` is left empty.
pub fn extract(
    path: &Path,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<Vec<ArchiveEntry>, PackageError> {
    check_destination(dest)?;
    let mut archive = Validated::open(path, limits)?;
    match archive.extract_into(dest) {
        Ok(()) => Ok(archive.entries),
        Err(e) => {
            // Cleanup is best effort: the extraction error is what the caller needs to see,
            // and a failure to remove a file we just wrote is not something they can act on.
            let _ = clear_dir(dest);
            Err(e)
        }
    }
}

/// Validates the zip at `path` as [`inspect`] does, then decompresses every entry without
/// writing it anywhere, so that data that does not match its headers (a lying size, a bad
/// checksum, a broken stream) is found now rather than when the archive is extracted. The
/// limits are enforced on the bytes actually decompressed, as [`extract`] does.
pub fn verify(path: &Path, limits: &ArchiveLimits) -> Result<Vec<ArchiveEntry>, PackageError> {
    let mut archive = Validated::open(path, limits)?;
    let mut total = 0;
    for index in 0..archive.entries.len() {
        let entry = &archive.entries[index];
        if entry.is_dir {
            continue;
        }
        let budget = Budget::new(entry, &archive.data[index], &archive.limits, u64::MAX);
        copy_entry(
            &mut archive.archive,
            index,
            &budget,
            &mut io::sink(),
            &mut total,
        )?;
    }
    Ok(archive.entries)
}

/// Reads the file `name` from the zip at `path`, after validating the whole archive as
/// [`inspect`] does.
///
/// `name` is normalised with [`check_relative_path`] before the lookup. The entry may expand
/// to at most `max` bytes (and at most `limits.max_entry_size`); the bound is enforced on the
/// decompressed bytes, not on the header.
pub fn read_file(
    path: &Path,
    name: &str,
    max: u64,
    limits: &ArchiveLimits,
) -> Result<Vec<u8>, PackageError> {
    Validated::open(path, limits)?.read(name, max)
}

/// What extraction needs to know about an entry beyond its [`ArchiveEntry`].
struct EntryData {
    compressed: u64,
    executable: bool,
}

/// An open archive whose every entry has passed validation.
pub(crate) struct Validated {
    archive: ZipArchive<BufReader<File>>,
    limits: ArchiveLimits,
    /// In archive order: `entries[i]` is the zip's entry `i`.
    entries: Vec<ArchiveEntry>,
    data: Vec<EntryData>,
}

impl Validated {
    /// Opens and validates the archive at `path`.
    pub(crate) fn open(path: &Path, limits: &ArchiveLimits) -> Result<Validated, PackageError> {
        let file = File::open(path)?;
        // A second handle for reading the central directory. It shares the file offset with
        // the zip reader, which is harmless: the zip reader seeks before every read, and the
        // directory walk below finishes before any entry is read.
        let walker = file.try_clone()?;
        let mut archive = ZipArchive::new(BufReader::new(file)).map_err(not_a_zip)?;
        let count = archive.len();
        if count > limits.max_entries {
            return Err(PackageError::TooManyEntries {
                count,
                limit: limits.max_entries,
            });
        }
        let data_end = archive.central_directory_start();
        check_central_directory(walker, data_end, count, limits.max_entries)?;

        let mut entries = Vec::with_capacity(count);
        let mut data = Vec::with_capacity(count);
        let mut total: u64 = 0;
        for index in 0..count {
            let file = archive
                .by_index_raw(index)
                .map_err(|e| PackageError::NotAZip(format!("cannot read entry {index}: {e}")))?;
            let (entry, entry_data) = check_entry(&file, data_end, limits)?;
            total = total.saturating_add(entry.size);
            if total > limits.max_total_size {
                return Err(PackageError::TooLarge {
                    what: "the archive's expanded contents".to_owned(),
                    limit: limits.max_total_size,
                });
            }
            entries.push(entry);
            data.push(entry_data);
        }
        check_unique(&entries)?;
        Ok(Validated {
            archive,
            limits: limits.clone(),
            entries,
            data,
        })
    }

    /// The validated entries, in archive order.
    pub(crate) fn entries(&self) -> &[ArchiveEntry] {
        &self.entries
    }

    /// Reads the file `name` (normalised first), allowing at most `max` expanded bytes.
    pub(crate) fn read(&mut self, name: &str, max: u64) -> Result<Vec<u8>, PackageError> {
        let path = check_relative_path(name)?;
        let Some(index) = self.entries.iter().position(|e| e.path == path) else {
            return Err(PackageError::Missing {
                name: path,
                hint: String::new(),
            });
        };
        let entry = &self.entries[index];
        if entry.is_dir {
            return Err(PackageError::Missing {
                name: path,
                hint: "; it is a folder, not a file".to_owned(),
            });
        }
        if entry.size > max {
            return Err(PackageError::TooLarge {
                what: format!("entry `{path}` ({} bytes)", entry.size),
                limit: max,
            });
        }
        // The declared size may be a lie, so it only guides the first allocation.
        let capacity = entry.size.min(PREALLOCATE_AT_MOST);
        let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        let mut total = 0;
        let budget = Budget::new(entry, &self.data[index], &self.limits, max);
        copy_entry(&mut self.archive, index, &budget, &mut out, &mut total)?;
        Ok(out)
    }

    fn extract_into(&mut self, dest: &Path) -> Result<(), PackageError> {
        let mut total = 0;
        for index in 0..self.entries.len() {
            let entry = &self.entries[index];
            // Every component of `entry.path` passed `check_relative_path`, and nothing in
            // `dest` was there before or is a link, so the join stays inside `dest`.
            let target = dest.join(&entry.path);
            if entry.is_dir {
                fs::create_dir_all(&target)?;
                continue;
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)?;
            let budget = Budget::new(entry, &self.data[index], &self.limits, u64::MAX);
            copy_entry(&mut self.archive, index, &budget, &mut out, &mut total)?;
            set_mode(&out, self.data[index].executable)?;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn set_mode(file: &File, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &File, _executable: bool) -> io::Result<()> {
    Ok(())
}

fn not_a_zip(e: zip::result::ZipError) -> PackageError {
    match e {
        zip::result::ZipError::Io(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
            ) =>
        {
            PackageError::Io(e)
        }
        other => PackageError::NotAZip(other.to_string()),
    }
}

/// Walks the central directory record by record.
///
/// The zip crate keeps entries in a map keyed by name, so two records with the same name
/// silently become one, and which of them a reader sees depends on the tool. Counting the
/// records ourselves catches that.
fn check_central_directory(
    file: File,
    start: u64,
    expected: usize,
    max_entries: usize,
) -> Result<(), PackageError> {
    let truncated = || PackageError::NotAZip("the central directory is truncated".to_owned());
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(start))?;
    let mut names: HashSet<Vec<u8>> = HashSet::with_capacity(expected);
    let mut duplicate: Option<Vec<u8>> = None;
    let mut count = 0usize;
    loop {
        let mut fixed = [0u8; CENTRAL_HEADER_LEN];
        let got = read_up_to(&mut reader, &mut fixed)?;
        if got < 4 || fixed[..4] != CENTRAL_HEADER_SIGNATURE {
            break;
        }
        if got < CENTRAL_HEADER_LEN {
            return Err(truncated());
        }
        let field = |at: usize| usize::from(u16::from_le_bytes([fixed[at], fixed[at + 1]]));
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let mut name = vec![0u8; name_len];
        reader.read_exact(&mut name).map_err(|_| truncated())?;
        let skip = i64::try_from(extra_len + comment_len).unwrap_or(i64::MAX);
        reader.seek_relative(skip)?;
        count += 1;
        if names.contains(&name) {
            duplicate.get_or_insert(name);
        } else {
            names.insert(name);
        }
    }
    if count > max_entries {
        return Err(PackageError::TooManyEntries {
            count,
            limit: max_entries,
        });
    }
    if let Some(name) = duplicate {
        return Err(PackageError::Duplicate(
            String::from_utf8_lossy(&name).into_owned(),
        ));
    }
    if count != expected {
        return Err(PackageError::NotAZip(format!(
            "the central directory holds {count} records but {expected} distinct names; entry names must be unique"
        )));
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Validates one entry's name, type, encryption, compression and declared sizes.
fn check_entry<R: Read>(
    file: &ZipFile<'_, R>,
    data_end: u64,
    limits: &ArchiveLimits,
) -> Result<(ArchiveEntry, EntryData), PackageError> {
    let raw_name = file.name();
    // The zip crate replaces invalid UTF-8 in names flagged as UTF-8 with U+FFFD, so two
    // different names could meet here as one; such names are refused outright.
    if raw_name.contains('\u{FFFD}') {
        return Err(PackageError::UnsafePath {
            name: raw_name.to_owned(),
            reason: "it is not valid UTF-8".to_owned(),
        });
    }
    let path = check_relative_path(raw_name)?;
    let mode = file.unix_mode();
    let named_dir = raw_name.ends_with('/');
    let is_dir = match mode.map(|m| m & S_IFMT) {
        None | Some(0) | Some(S_IFREG) => named_dir,
        Some(S_IFDIR) => true,
        Some(S_IFLNK) => return Err(PackageError::Symlink(path)),
        Some(kind) => {
            let what = match kind {
                S_IFIFO => "a named pipe".to_owned(),
                S_IFCHR => "a character device".to_owned(),
                S_IFBLK => "a block device".to_owned(),
                S_IFSOCK => "a socket".to_owned(),
                other => format!("of unknown file type {other:#o}"),
            };
            return Err(PackageError::UnsupportedEntry {
                name: path,
                reason: format!("it is {what}; only regular files and folders are allowed"),
            });
        }
    };
    if file.encrypted() {
        return Err(PackageError::Encrypted(path));
    }
    if is_dir {
        let entry = ArchiveEntry {
            path,
            size: 0,
            is_dir,
        };
        let data = EntryData {
            compressed: 0,
            executable: false,
        };
        return Ok((entry, data));
    }
    let method = file.compression();
    if !matches!(
        method,
        CompressionMethod::Stored | CompressionMethod::Deflated
    ) {
        return Err(PackageError::UnsupportedEntry {
            name: path,
            reason: format!(
                "it uses the {method} compression method; re-create the zip with deflate or no compression"
            ),
        });
    }
    let size = file.size();
    let compressed = file.compressed_size();
    if size > limits.max_entry_size {
        return Err(PackageError::TooLarge {
            what: format!("entry `{path}` ({size} bytes)"),
            limit: limits.max_entry_size,
        });
    }
    if size > RATIO_THRESHOLD && size > compressed.saturating_mul(limits.max_ratio) {
        return Err(PackageError::SuspiciousRatio {
            name: path,
            limit: limits.max_ratio,
        });
    }
    // The compressed bytes must lie before the central directory. Otherwise the header
    // overstates the compressed size, which would also make the ratio check meaningless.
    if file.data_start().saturating_add(compressed) > data_end {
        return Err(PackageError::Corrupt {
            name: path,
            detail: format!(
                "its header claims {compressed} compressed bytes, more than the archive holds"
            ),
        });
    }
    let executable = mode.is_some_and(|m| m & 0o111 != 0);
    Ok((
        ArchiveEntry { path, size, is_dir },
        EntryData {
            compressed,
            executable,
        },
    ))
}

/// Rejects names that repeat after normalisation, and names used both for a file and for a
/// folder (including the implicit parent folders of nested entries).
fn check_unique(entries: &[ArchiveEntry]) -> Result<(), PackageError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Seen {
        File,
        Dir,
        Implied,
    }
    let mut seen: HashMap<&str, Seen> = HashMap::with_capacity(entries.len());
    for entry in entries {
        for (at, _) in entry.path.match_indices('/') {
            let parent = &entry.path[..at];
            match seen.get(parent) {
                Some(Seen::File) => return Err(PackageError::Duplicate(parent.to_owned())),
                Some(_) => {}
                None => {
                    seen.insert(parent, Seen::Implied);
                }
            }
        }
        let now = if entry.is_dir { Seen::Dir } else { Seen::File };
        match seen.get(entry.path.as_str()) {
            None => {}
            Some(Seen::Implied) if now == Seen::Dir => {}
            Some(_) => return Err(PackageError::Duplicate(entry.path.clone())),
        }
        seen.insert(&entry.path, now);
    }
    Ok(())
}

fn check_destination(dest: &Path) -> Result<(), PackageError> {
    let bad = |reason: &str| PackageError::BadDestination {
        path: dest.to_owned(),
        reason: reason.to_owned(),
    };
    let meta = match fs::metadata(dest) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(bad("it does not exist; create an empty folder first"));
        }
        Err(e) => return Err(e.into()),
    };
    if !meta.is_dir() {
        return Err(bad("it is not a folder"));
    }
    if fs::read_dir(dest)?.next().is_some() {
        return Err(bad("it is not empty; extract into an empty folder"));
    }
    Ok(())
}

/// Removes everything inside `dir`, leaving `dir` itself.
fn clear_dir(dir: &Path) -> io::Result<()> {
    for child in fs::read_dir(dir)? {
        let child = child?;
        if child.file_type()?.is_dir() {
            fs::remove_dir_all(child.path())?;
        } else {
            fs::remove_file(child.path())?;
        }
    }
    Ok(())
}

/// The bounds on one entry's decompressed bytes.
struct Budget<'a> {
    name: &'a str,
    declared: u64,
    compressed: u64,
    max_entry: u64,
    max_total: u64,
    max_ratio: u64,
}

impl<'a> Budget<'a> {
    /// The budget for `entry`, which may expand to at most `max` bytes on top of the limits.
    fn new(entry: &'a ArchiveEntry, data: &EntryData, limits: &ArchiveLimits, max: u64) -> Self {
        Budget {
            name: &entry.path,
            declared: entry.size,
            compressed: data.compressed,
            max_entry: max.min(limits.max_entry_size),
            max_total: limits.max_total_size,
            max_ratio: limits.max_ratio,
        }
    }
}

fn copy_entry(
    archive: &mut ZipArchive<BufReader<File>>,
    index: usize,
    budget: &Budget<'_>,
    out: &mut impl Write,
    total: &mut u64,
) -> Result<(), PackageError> {
    let mut reader = archive.by_index(index).map_err(|e| PackageError::Corrupt {
        name: budget.name.to_owned(),
        detail: e.to_string(),
    })?;
    copy_bounded(&mut reader, out, budget, total)
}

/// Copies `reader` to `out`, checking every chunk against `budget` before writing it, so
/// nothing beyond a limit is written and at most one chunk past it is read. `total` is the
/// running count across the archive.
fn copy_bounded(
    reader: &mut impl Read,
    out: &mut impl Write,
    budget: &Budget<'_>,
    total: &mut u64,
) -> Result<(), PackageError> {
    let name = budget.name;
    let mut buf = vec![0u8; CHUNK];
    let mut written: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(PackageError::Corrupt {
                    name: name.to_owned(),
                    detail: format!("its data cannot be decompressed ({e})"),
                });
            }
        };
        let chunk = n as u64;
        written = written.saturating_add(chunk);
        *total = total.saturating_add(chunk);
        if written > budget.max_entry {
            return Err(PackageError::TooLarge {
                what: format!("entry `{name}`"),
                limit: budget.max_entry,
            });
        }
        if *total > budget.max_total {
            return Err(PackageError::TooLarge {
                what: "the archive's expanded contents".to_owned(),
                limit: budget.max_total,
            });
        }
        if written > RATIO_THRESHOLD && written > budget.compressed.saturating_mul(budget.max_ratio)
        {
            return Err(PackageError::SuspiciousRatio {
                name: name.to_owned(),
                limit: budget.max_ratio,
            });
        }
        if written > budget.declared {
            return Err(PackageError::Corrupt {
                name: name.to_owned(),
                detail: format!(
                    "it expands to more than the {} bytes its header declares",
                    budget.declared
                ),
            });
        }
        out.write_all(&buf[..n])?;
    }
    if written != budget.declared {
        return Err(PackageError::Corrupt {
            name: name.to_owned(),
            detail: format!(
                "it holds {written} bytes but its header declares {}",
                budget.declared
            ),
        });
    }
    Ok(())
}

/// Hand-built archives for tests: every header field is under the test's control, so
/// tests can make what no well-behaved zip writer would (`..` names, lying sizes, link
/// attributes, repeated names).
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod testzip {
    use std::io::{Cursor, Read, Write};
    use std::path::PathBuf;

    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipArchive, ZipWriter};

    /// Version made by: Unix (3), zip spec 2.0.
    const MADE_BY_UNIX: u16 = (3 << 8) | 20;
    /// General purpose flag bit 11: the name is UTF-8.
    pub const FLAG_UTF8: u16 = 1 << 11;

    /// One entry of a hand-built archive.
    #[derive(Clone, Debug)]
    pub struct RawEntry {
        pub name: Vec<u8>,
        /// The bytes stored in the archive: compressed when `method` is 8.
        pub data: Vec<u8>,
        pub method: u16,
        pub crc: u32,
        /// The declared expanded size.
        pub size: u32,
        /// The declared compressed size.
        pub compressed_size: u32,
        pub external_attrs: u32,
        pub made_by: u16,
        pub flags: u16,
    }

    impl RawEntry {
        /// A regular file stored uncompressed, mode 0o644.
        pub fn stored(name: &str, data: &[u8]) -> RawEntry {
            RawEntry {
                name: name.as_bytes().to_vec(),
                data: data.to_vec(),
                method: 0,
                crc: crc32(data),
                size: len32(data),
                compressed_size: len32(data),
                external_attrs: 0o100_644 << 16,
                made_by: MADE_BY_UNIX,
                flags: FLAG_UTF8,
            }
        }

        /// A regular file compressed with deflate, mode 0o644.
        pub fn deflated(name: &str, data: &[u8]) -> RawEntry {
            let (compressed, crc) = deflate(data);
            RawEntry {
                method: 8,
                crc,
                compressed_size: len32(&compressed),
                data: compressed,
                ..RawEntry::stored(name, data)
            }
        }

        /// A folder entry; `name` should end with `/`.
        pub fn dir(name: &str) -> RawEntry {
            RawEntry::stored(name, b"").mode(0o040_755)
        }

        /// A symbolic link to `target`.
        pub fn symlink(name: &str, target: &str) -> RawEntry {
            RawEntry::stored(name, target.as_bytes()).mode(0o120_777)
        }

        /// Sets the unix mode (file type and permissions) in the external attributes.
        pub fn mode(mut self, mode: u32) -> RawEntry {
            self.external_attrs = mode << 16;
            self
        }
    }

    fn len32(data: &[u8]) -> u32 {
        u32::try_from(data.len()).expect("test data fits a zip32 entry")
    }

    /// Lays out local headers and data, the central directory and its end record.
    pub fn build(entries: &[RawEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let offset = u32::try_from(out.len()).expect("test archive fits zip32");
            let name_len = u16::try_from(e.name.len()).expect("short test name");
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(&e.flags.to_le_bytes());
            out.extend_from_slice(&e.method.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&0x21u16.to_le_bytes());
            out.extend_from_slice(&e.crc.to_le_bytes());
            out.extend_from_slice(&e.compressed_size.to_le_bytes());
            out.extend_from_slice(&e.size.to_le_bytes());
            out.extend_from_slice(&name_len.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&e.name);
            out.extend_from_slice(&e.data);

            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&e.made_by.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes());
            central.extend_from_slice(&e.flags.to_le_bytes());
            central.extend_from_slice(&e.method.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0x21u16.to_le_bytes());
            central.extend_from_slice(&e.crc.to_le_bytes());
            central.extend_from_slice(&e.compressed_size.to_le_bytes());
            central.extend_from_slice(&e.size.to_le_bytes());
            central.extend_from_slice(&name_len.to_le_bytes());
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&e.external_attrs.to_le_bytes());
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(&e.name);
        }
        let count = u16::try_from(entries.len()).expect("test archive has < 65536 entries");
        let cd_offset = u32::try_from(out.len()).expect("test archive fits zip32");
        let cd_size = u32::try_from(central.len()).expect("test archive fits zip32");
        out.extend_from_slice(&central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&cd_size.to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    /// Deflates `data` with the zip crate's writer; returns the raw stream and its CRC-32.
    pub fn deflate(data: &[u8]) -> (Vec<u8>, u32) {
        let bytes = with_writer(|w| {
            let options =
                SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
            w.start_file("x", options).expect("start entry");
            w.write_all(data).expect("write entry");
        });
        let mut archive = ZipArchive::new(Cursor::new(bytes)).expect("read back");
        let mut raw = archive.by_index_raw(0).expect("entry 0");
        let crc = raw.crc32();
        let mut compressed = Vec::new();
        raw.read_to_end(&mut compressed).expect("raw bytes");
        (compressed, crc)
    }

    /// Builds an archive with the zip crate's own writer.
    pub fn with_writer(fill: impl FnOnce(&mut ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        fill(&mut writer);
        writer.finish().expect("finish archive").into_inner()
    }

    /// The CRC-32 (IEEE) that zip headers carry.
    pub fn crc32(data: &[u8]) -> u32 {
        crc32fast::hash(data)
    }

    /// Deterministic incompressible bytes (xorshift).
    pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    /// A temporary folder holding `archive.zip` and an empty `out/` to extract into.
    pub struct Fixture {
        pub dir: tempfile::TempDir,
        pub zip: PathBuf,
        pub out: PathBuf,
    }

    impl Fixture {
        pub fn new(bytes: &[u8]) -> Fixture {
            let dir = tempfile::tempdir().expect("temp dir");
            let zip = dir.path().join("archive.zip");
            let out = dir.path().join("out");
            std::fs::write(&zip, bytes).expect("write archive");
            std::fs::create_dir(&out).expect("create out");
            Fixture { dir, zip, out }
        }

        /// Every path under `out/`, relative and sorted, folders with a trailing `/`.
        pub fn extracted(&self) -> Vec<String> {
            let mut found = Vec::new();
            let mut stack = vec![self.out.clone()];
            while let Some(dir) = stack.pop() {
                for child in std::fs::read_dir(&dir).expect("read dir") {
                    let path = child.expect("dir entry").path();
                    let rel = path.strip_prefix(&self.out).expect("under out");
                    let mut rel = rel.to_string_lossy().replace('\\', "/");
                    if path.is_dir() {
                        rel.push('/');
                        stack.push(path);
                    }
                    found.push(rel);
                }
            }
            found.sort();
            found
        }

        /// Asserts that extraction left no trace: `out/` is empty and nothing appeared
        /// next to it.
        pub fn assert_untouched(&self) {
            assert_eq!(self.extracted(), Vec::<String>::new(), "out/ must be empty");
            let mut siblings: Vec<String> = std::fs::read_dir(self.dir.path())
                .expect("read temp dir")
                .map(|c| c.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            siblings.sort();
            assert_eq!(siblings, ["archive.zip", "out"]);
        }
    }

    /// Asserts that `result` failed with the error code `kind` and a message containing
    /// `text`, and returns the error for closer checks.
    pub fn expect_err<T: std::fmt::Debug>(
        result: Result<T, super::PackageError>,
        kind: &str,
        text: &str,
    ) -> super::PackageError {
        let err = result.expect_err("expected an error");
        let message = err.to_string();
        assert_eq!(err.kind(), kind, "wrong error: {message}");
        assert!(
            message.contains(text),
            "message {message:?} does not contain {text:?}"
        );
        err
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipArchive};

    use super::testzip::{
        FLAG_UTF8, Fixture, RawEntry, build, crc32, expect_err, noise, with_writer,
    };
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn defaults() -> ArchiveLimits {
        ArchiveLimits::default()
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let limits = defaults();
        assert_eq!(limits.max_entries, 10_000);
        assert_eq!(limits.max_total_size, 1 << 30);
        assert_eq!(limits.max_entry_size, 512 << 20);
        assert_eq!(limits.max_ratio, 200);
        assert_eq!(limits.max_component_size, 64 << 20);
    }

    #[test]
    fn test_crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn relative_paths_are_normalised() {
        for (given, want) in [
            ("a", "a"),
            ("a/b.txt", "a/b.txt"),
            ("./a//b/./c/", "a/b/c"),
            ("dir/", "dir"),
            ("...", "..."),
            ("a..b/c", "a..b/c"),
            ("données/日本.txt", "données/日本.txt"),
        ] {
            assert_eq!(check_relative_path(given).expect(given), want, "{given:?}");
        }
    }

    #[test]
    fn unsafe_relative_paths_are_rejected_with_the_rule_they_break() {
        let long_component = "a".repeat(256);
        let long_path = "ab/".repeat(400);
        for (given, reason) in [
            ("", "empty"),
            ("../evil", "`..`"),
            ("a/../../evil", "`..`"),
            ("a/..", "`..`"),
            ("/etc/x", "absolute"),
            ("\\x", "absolute"),
            ("C:\\x", "drive letter"),
            ("C:x", "drive letter"),
            ("c:/x", "drive letter"),
            ("./C:/x", "drive letter"),
            (".//d:", "drive letter"),
            ("a\\..\\b", "backslash"),
            ("a\\b", "backslash"),
            ("a\0b", "U+0000"),
            ("a\nb", "U+000A"),
            ("a\u{7f}", "U+007F"),
            (".", "names no file"),
            ("././/", "names no file"),
            (long_component.as_str(), "256 bytes long"),
            (long_path.as_str(), "1200 bytes long"),
        ] {
            let err = expect_err(check_relative_path(given), "unsafe_path", reason);
            assert!(
                matches!(&err, PackageError::UnsafePath { name, .. } if name == given),
                "{err:?}"
            );
        }
    }

    #[test]
    fn zip_slip_entries_are_rejected_and_nothing_is_written() {
        for (name, reason) in [
            ("../evil", "`..`"),
            ("a/../../evil", "`..`"),
            ("/etc/x", "absolute"),
            ("C:\\x", "drive letter"),
            ("a\\..\\b", "backslash"),
        ] {
            let fx = Fixture::new(&build(&[
                RawEntry::stored("fine.txt", b"fine"),
                RawEntry::stored(name, b"evil"),
            ]));
            let err = expect_err(inspect(&fx.zip, &defaults()), "unsafe_path", reason);
            assert!(
                matches!(&err, PackageError::UnsafePath { name: n, .. } if n == name),
                "{err:?}"
            );
            expect_err(
                extract(&fx.zip, &fx.out, &defaults()),
                "unsafe_path",
                reason,
            );
            fx.assert_untouched();
        }
    }

    #[test]
    fn names_with_control_characters_or_bad_utf8_are_rejected() {
        let fx = Fixture::new(&build(&[RawEntry::stored("a\u{1}b", b"x")]));
        expect_err(inspect(&fx.zip, &defaults()), "unsafe_path", "U+0001");

        let mut bad = RawEntry::stored("x", b"x");
        bad.name = vec![b'a', 0xff];
        assert_eq!(bad.flags & FLAG_UTF8, FLAG_UTF8);
        let fx = Fixture::new(&build(&[bad]));
        expect_err(
            inspect(&fx.zip, &defaults()),
            "unsafe_path",
            "not valid UTF-8",
        );
    }

    #[test]
    fn symlinks_are_rejected() {
        let written = with_writer(|w| {
            w.add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
                .expect("add symlink");
        });
        let fx = Fixture::new(&written);
        let err = expect_err(inspect(&fx.zip, &defaults()), "symlink", "symbolic link");
        assert!(matches!(&err, PackageError::Symlink(name) if name == "link"));
        expect_err(extract(&fx.zip, &fx.out, &defaults()), "symlink", "`link`");
        fx.assert_untouched();

        let raw = RawEntry::stored("data/link", b"../../etc/passwd").mode(0o120_777);
        let fx = Fixture::new(&build(&[raw]));
        let err = expect_err(inspect(&fx.zip, &defaults()), "symlink", "`data/link`");
        assert!(matches!(&err, PackageError::Symlink(name) if name == "data/link"));
    }

    #[test]
    fn special_files_are_rejected_by_their_exact_type() {
        for (mode, what) in [
            (0o010_644, "named pipe"),
            (0o020_644, "character device"),
            (0o060_644, "block device"),
            // A socket's type bits include the link bits; it must not pass as anything else.
            (0o140_755, "socket"),
            (0o170_644, "unknown file type"),
        ] {
            let fx = Fixture::new(&build(&[RawEntry::stored("odd", b"").mode(mode)]));
            let err = expect_err(inspect(&fx.zip, &defaults()), "unsupported_entry", what);
            assert!(err.to_string().contains("only regular files and folders"));
        }
    }

    #[test]
    fn encrypted_entries_are_rejected() {
        let mut entry = RawEntry::stored("secret.txt", b"xxxxxxxxxxxxxxxx");
        entry.flags |= 1;
        let fx = Fixture::new(&build(&[entry]));
        let err = expect_err(
            inspect(&fx.zip, &defaults()),
            "encrypted_entry",
            "encrypted",
        );
        assert!(matches!(&err, PackageError::Encrypted(name) if name == "secret.txt"));
    }

    #[test]
    fn unsupported_compression_methods_are_rejected() {
        let mut entry = RawEntry::stored("data.bz2", b"not really bzip2");
        entry.method = 12;
        let fx = Fixture::new(&build(&[entry]));
        expect_err(
            inspect(&fx.zip, &defaults()),
            "unsupported_entry",
            "compression method",
        );
    }

    #[test]
    fn high_ratio_entries_above_one_mebibyte_are_rejected() {
        let zeros = vec![0u8; 2 * MIB];
        let fx = Fixture::new(&build(&[RawEntry::deflated("zeros.bin", &zeros)]));
        let err = expect_err(
            inspect(&fx.zip, &defaults()),
            "suspicious_ratio",
            "more than 200 times",
        );
        assert!(
            matches!(&err, PackageError::SuspiciousRatio { name, limit: 200 } if name == "zeros.bin")
        );
        expect_err(
            extract(&fx.zip, &fx.out, &defaults()),
            "suspicious_ratio",
            "zeros.bin",
        );
        fx.assert_untouched();

        // The same size of incompressible data, and a highly compressible entry of exactly
        // 1 MiB, are fine.
        let fx = Fixture::new(&build(&[
            RawEntry::deflated("noise.bin", &noise(2 * MIB, 7)),
            RawEntry::deflated("small-zeros.bin", &zeros[..MIB]),
        ]));
        let entries = inspect(&fx.zip, &defaults()).expect("ordinary data passes");
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn total_and_entry_sizes_are_limited() {
        let limits = ArchiveLimits {
            max_total_size: 2500,
            max_entry_size: 1000,
            ..defaults()
        };
        let block = vec![7u8; 1000];
        let three = build(&[
            RawEntry::stored("a", &block),
            RawEntry::stored("b", &block),
            RawEntry::stored("c", &block),
        ]);
        let fx = Fixture::new(&three);
        let err = expect_err(inspect(&fx.zip, &limits), "too_large", "expanded contents");
        assert!(matches!(err, PackageError::TooLarge { limit: 2500, .. }));
        expect_err(
            extract(&fx.zip, &fx.out, &limits),
            "too_large",
            "2500 bytes",
        );
        fx.assert_untouched();

        let two = Fixture::new(&build(&[
            RawEntry::stored("a", &block),
            RawEntry::stored("b", &block),
        ]));
        assert_eq!(inspect(&two.zip, &limits).expect("within limits").len(), 2);

        let big = Fixture::new(&build(&[RawEntry::stored("big.bin", &[1u8; 1001])]));
        let err = expect_err(
            inspect(&big.zip, &limits),
            "too_large",
            "entry `big.bin` (1001 bytes)",
        );
        assert!(matches!(err, PackageError::TooLarge { limit: 1000, .. }));
    }

    /// A zip bomb that declares 1000 bytes and expands to 4 MiB.
    fn lying_bomb(name: &str) -> RawEntry {
        let mut bomb = RawEntry::deflated(name, &vec![0u8; 4 * MIB]);
        bomb.size = 1000;
        bomb
    }

    #[test]
    fn a_lying_size_header_is_caught_while_streaming_and_extraction_is_undone() {
        let fx = Fixture::new(&build(&[
            RawEntry::stored("docs/readme.txt", b"hello"),
            lying_bomb("bomb.bin"),
        ]));
        let entries = inspect(&fx.zip, &defaults()).expect("the headers alone look fine");
        assert_eq!(entries[1].size, 1000);

        let err = expect_err(
            extract(&fx.zip, &fx.out, &defaults()),
            "corrupt_entry",
            "more than the 1000 bytes its header declares",
        );
        assert!(matches!(&err, PackageError::Corrupt { name, .. } if name == "bomb.bin"));
        fx.assert_untouched();

        expect_err(
            read_file(&fx.zip, "bomb.bin", 1 << 30, &defaults()),
            "corrupt_entry",
            "its header declares",
        );
    }

    #[test]
    fn verify_reads_every_entry_without_extracting() {
        let good = Fixture::new(&build(&[
            RawEntry::stored("docs/readme.txt", b"hello"),
            RawEntry::deflated("data.bin", &noise(3 * MIB, 7)),
        ]));
        assert_eq!(
            verify(&good.zip, &defaults()).expect("valid"),
            inspect(&good.zip, &defaults()).expect("valid")
        );
        good.assert_untouched();

        let bad = Fixture::new(&build(&[
            RawEntry::stored("docs/readme.txt", b"hello"),
            lying_bomb("bomb.bin"),
        ]));
        expect_err(
            verify(&bad.zip, &defaults()),
            "corrupt_entry",
            "entry `bomb.bin` is corrupt: it expands to more than the 1000 bytes its header declares",
        );
        bad.assert_untouched();
    }

    #[test]
    fn size_limits_apply_to_the_actual_bytes() {
        let fx = Fixture::new(&build(&[lying_bomb("one.bin"), lying_bomb("two.bin")]));
        let entry_limit = ArchiveLimits {
            max_entry_size: 5000,
            ..defaults()
        };
        let err = expect_err(
            extract(&fx.zip, &fx.out, &entry_limit),
            "too_large",
            "entry `one.bin` is larger than the limit of 5000 bytes",
        );
        assert!(matches!(err, PackageError::TooLarge { limit: 5000, .. }));
        fx.assert_untouched();

        let total_limit = ArchiveLimits {
            max_total_size: 3000,
            ..defaults()
        };
        expect_err(
            extract(&fx.zip, &fx.out, &total_limit),
            "too_large",
            "the archive's expanded contents is larger than the limit of 3000 bytes",
        );
        fx.assert_untouched();
    }

    #[test]
    fn content_shorter_than_declared_is_corrupt() {
        let mut short = RawEntry::stored("short.txt", b"abc");
        short.size = 10;
        let fx = Fixture::new(&build(&[short]));
        expect_err(
            extract(&fx.zip, &fx.out, &defaults()),
            "corrupt_entry",
            "it holds 3 bytes but its header declares 10",
        );
        fx.assert_untouched();
    }

    #[test]
    fn an_overstated_compressed_size_is_corrupt() {
        let mut entry = RawEntry::stored("a.txt", b"abc");
        entry.compressed_size = 1_000_000;
        let fx = Fixture::new(&build(&[entry]));
        expect_err(
            inspect(&fx.zip, &defaults()),
            "corrupt_entry",
            "claims 1000000 compressed bytes",
        );
    }

    #[test]
    fn damaged_compressed_data_is_corrupt() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let entry = RawEntry::deflated("numbers.txt", &text);
        let data_len = entry.data.len();
        let mut bytes = build(&[entry]);
        // Local header (30 bytes) and name (11 bytes) precede the data.
        for b in &mut bytes[41 + data_len / 3..41 + data_len / 3 + 16] {
            *b ^= 0x5a;
        }
        let fx = Fixture::new(&bytes);
        inspect(&fx.zip, &defaults()).expect("headers are intact");
        expect_err(
            extract(&fx.zip, &fx.out, &defaults()),
            "corrupt_entry",
            "cannot be decompressed",
        );
        fx.assert_untouched();
    }

    fn many_entries(count: usize) -> Vec<u8> {
        let entries: Vec<RawEntry> = (0..count)
            .map(|i| RawEntry::stored(&format!("f{i}"), b""))
            .collect();
        build(&entries)
    }

    #[test]
    fn the_entry_count_is_limited() {
        let fx = Fixture::new(&many_entries(10_001));
        let err = expect_err(
            inspect(&fx.zip, &defaults()),
            "too_many_entries",
            "the archive has 10001 entries; at most 10000 are allowed",
        );
        assert!(matches!(
            err,
            PackageError::TooManyEntries {
                count: 10_001,
                limit: 10_000
            }
        ));

        let one_more = ArchiveLimits {
            max_entries: 10_001,
            ..defaults()
        };
        assert_eq!(
            inspect(&fx.zip, &one_more).expect("at the limit").len(),
            10_001
        );
    }

    #[test]
    fn records_hidden_by_repeated_names_still_count_towards_the_limit() {
        let mut entries: Vec<RawEntry> = (0..10_000)
            .map(|i| RawEntry::stored(&format!("f{i}"), b""))
            .collect();
        entries.push(RawEntry::stored("f0", b""));
        let bytes = build(&entries);
        let merged = ZipArchive::new(std::io::Cursor::new(bytes.clone())).expect("zip");
        assert_eq!(merged.len(), 10_000);
        let fx = Fixture::new(&bytes);
        let err = expect_err(
            inspect(&fx.zip, &defaults()),
            "too_many_entries",
            "the archive has 10001 entries",
        );
        assert!(matches!(
            err,
            PackageError::TooManyEntries {
                count: 10_001,
                limit: 10_000
            }
        ));
    }

    #[test]
    fn repeated_names_are_rejected_even_when_the_zip_reader_merges_them() {
        let bytes = build(&[
            RawEntry::stored("assembly.toml", b"first"),
            RawEntry::stored("assembly.toml", b"second"),
        ]);
        // The zip crate alone sees a single entry here.
        let merged = ZipArchive::new(std::io::Cursor::new(bytes.clone())).expect("zip");
        assert_eq!(merged.len(), 1);

        let fx = Fixture::new(&bytes);
        let err = expect_err(
            inspect(&fx.zip, &defaults()),
            "duplicate_entry",
            "holds `assembly.toml` more than once",
        );
        assert!(matches!(&err, PackageError::Duplicate(name) if name == "assembly.toml"));
    }

    #[test]
    fn names_that_collide_after_normalisation_are_rejected() {
        let cases: [(&[RawEntry], &str); 6] = [
            (
                &[
                    RawEntry::stored("a/b", b"1"),
                    RawEntry::stored("a//b", b"2"),
                ],
                "a/b",
            ),
            (
                &[RawEntry::stored("x", b"1"), RawEntry::stored("./x", b"2")],
                "x",
            ),
            (&[RawEntry::stored("a", b"1"), RawEntry::dir("a/")], "a"),
            (&[RawEntry::dir("a/"), RawEntry::stored("a", b"1")], "a"),
            (
                &[RawEntry::stored("a", b"1"), RawEntry::stored("a/b", b"2")],
                "a",
            ),
            (
                &[RawEntry::stored("a/b/c", b"1"), RawEntry::stored("a", b"2")],
                "a",
            ),
        ];
        for (entries, name) in cases {
            let fx = Fixture::new(&build(entries));
            let err = expect_err(inspect(&fx.zip, &defaults()), "duplicate_entry", name);
            assert!(
                matches!(&err, PackageError::Duplicate(n) if n == name),
                "{entries:?}: {err:?}"
            );
        }
    }

    #[test]
    fn folders_may_be_listed_before_or_after_their_contents() {
        let fx = Fixture::new(&build(&[
            RawEntry::stored("a/b/c.txt", b"1"),
            RawEntry::dir("a/"),
            RawEntry::dir("a/b/"),
            RawEntry::dir("d/"),
            RawEntry::stored("d/e.txt", b"2"),
        ]));
        let paths: Vec<_> = inspect(&fx.zip, &defaults())
            .expect("valid")
            .into_iter()
            .map(|e| (e.path, e.is_dir))
            .collect();
        assert_eq!(
            paths,
            [
                ("a/b/c.txt".to_owned(), false),
                ("a".to_owned(), true),
                ("a/b".to_owned(), true),
                ("d".to_owned(), true),
                ("d/e.txt".to_owned(), false),
            ]
        );
    }

    fn sample_zip() -> Vec<u8> {
        with_writer(|w| {
            let deflated = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .unix_permissions(0o600);
            w.add_directory("docs/", SimpleFileOptions::default())
                .expect("dir");
            w.start_file("docs/guide/intro.txt", deflated)
                .expect("file");
            w.write_all(b"Welcome to Tessera.\n").expect("write");
            w.start_file(
                "bin/run.sh",
                SimpleFileOptions::default()
                    .compression_method(CompressionMethod::Stored)
                    .unix_permissions(0o755),
            )
            .expect("file");
            w.write_all(b"#!/bin/sh\necho hi\n").expect("write");
            w.start_file("empty.txt", deflated).expect("file");
        })
    }

    #[test]
    fn a_nested_archive_is_extracted_with_exact_bytes_and_modes() {
        let fx = Fixture::new(&sample_zip());
        let entries = extract(&fx.zip, &fx.out, &defaults()).expect("extracts");
        assert_eq!(
            entries,
            [
                ArchiveEntry {
                    path: "docs".into(),
                    size: 0,
                    is_dir: true
                },
                ArchiveEntry {
                    path: "docs/guide/intro.txt".into(),
                    size: 20,
                    is_dir: false
                },
                ArchiveEntry {
                    path: "bin/run.sh".into(),
                    size: 18,
                    is_dir: false
                },
                ArchiveEntry {
                    path: "empty.txt".into(),
                    size: 0,
                    is_dir: false
                },
            ]
        );
        assert_eq!(
            fx.extracted(),
            [
                "bin/",
                "bin/run.sh",
                "docs/",
                "docs/guide/",
                "docs/guide/intro.txt",
                "empty.txt"
            ]
        );
        let read = |p: &str| fs::read(fx.out.join(p)).expect(p);
        assert_eq!(read("docs/guide/intro.txt"), b"Welcome to Tessera.\n");
        assert_eq!(read("bin/run.sh"), b"#!/bin/sh\necho hi\n");
        assert_eq!(read("empty.txt"), b"");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &str| fs::metadata(fx.out.join(p)).expect(p).permissions().mode() & 0o777;
            assert_eq!(mode("bin/run.sh"), 0o755);
            assert_eq!(mode("docs/guide/intro.txt"), 0o644);
            assert_eq!(mode("empty.txt"), 0o644);
        }
    }

    #[test]
    fn an_archive_with_a_prefix_such_as_a_launcher_script_is_accepted() {
        let mut bytes = b"#!/bin/sh\nexec unzip \"$0\"\n".to_vec();
        bytes.extend_from_slice(&sample_zip());
        let fx = Fixture::new(&bytes);
        assert_eq!(inspect(&fx.zip, &defaults()).expect("valid").len(), 4);
        extract(&fx.zip, &fx.out, &defaults()).expect("extracts");
        assert_eq!(
            fs::read(fx.out.join("bin/run.sh")).expect("read"),
            b"#!/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn an_empty_archive_is_valid() {
        let fx = Fixture::new(&build(&[]));
        assert_eq!(inspect(&fx.zip, &defaults()).expect("valid"), []);
    }

    #[test]
    fn non_zip_data_is_rejected() {
        let valid = sample_zip();
        for (what, bytes) in [
            ("empty file", Vec::new()),
            ("random bytes", noise(4096, 42)),
            ("text", b"hello, this is not a zip".to_vec()),
            ("first half", valid[..valid.len() / 2].to_vec()),
            ("missing last byte", valid[..valid.len() - 1].to_vec()),
        ] {
            let fx = Fixture::new(&bytes);
            let err = expect_err(
                inspect(&fx.zip, &defaults()),
                "not_a_zip",
                "not a readable zip archive",
            );
            assert!(matches!(err, PackageError::NotAZip(_)), "{what}");
            expect_err(
                extract(&fx.zip, &fx.out, &defaults()),
                "not_a_zip",
                "truncated",
            );
            fx.assert_untouched();
        }
    }

    #[test]
    fn a_missing_archive_is_an_io_error() {
        let fx = Fixture::new(b"");
        let err = expect_err(
            inspect(&fx.dir.path().join("nope.zip"), &defaults()),
            "io",
            "i/o error",
        );
        assert!(matches!(&err, PackageError::Io(e) if e.kind() == io::ErrorKind::NotFound));
    }

    #[test]
    fn the_destination_must_be_an_existing_empty_folder() {
        let fx = Fixture::new(&sample_zip());
        fs::write(fx.out.join("old.txt"), b"old").expect("write");
        expect_err(
            extract(&fx.zip, &fx.out, &defaults()),
            "bad_destination",
            "not empty",
        );
        assert_eq!(fs::read(fx.out.join("old.txt")).expect("kept"), b"old");

        let missing = fx.dir.path().join("missing");
        let err = expect_err(
            extract(&fx.zip, &missing, &defaults()),
            "bad_destination",
            "does not exist",
        );
        assert!(matches!(&err, PackageError::BadDestination { path, .. } if *path == missing));
        assert!(!missing.exists());

        expect_err(
            extract(&fx.zip, &fx.zip, &defaults()),
            "bad_destination",
            "not a folder",
        );
    }

    #[test]
    fn read_file_returns_one_entry_and_checks_name_and_bound() {
        let fx = Fixture::new(&sample_zip());
        let limits = defaults();
        assert_eq!(
            read_file(&fx.zip, "docs/guide/intro.txt", 20, &limits).expect("read"),
            b"Welcome to Tessera.\n"
        );
        assert_eq!(
            read_file(&fx.zip, "./docs//guide/intro.txt", 100, &limits).expect("normalised"),
            b"Welcome to Tessera.\n"
        );
        let err = expect_err(
            read_file(&fx.zip, "docs/guide/intro.txt", 19, &limits),
            "too_large",
            "entry `docs/guide/intro.txt` (20 bytes) is larger than the limit of 19 bytes",
        );
        assert!(matches!(err, PackageError::TooLarge { limit: 19, .. }));
        let err = expect_err(
            read_file(&fx.zip, "nope.txt", 100, &limits),
            "missing_entry",
            "no entry `nope.txt`",
        );
        assert!(matches!(&err, PackageError::Missing { name, .. } if name == "nope.txt"));
        expect_err(
            read_file(&fx.zip, "docs/", 100, &limits),
            "missing_entry",
            "it is a folder",
        );
        expect_err(
            read_file(&fx.zip, "../x", 100, &limits),
            "unsafe_path",
            "`..`",
        );
    }

    /// Counts what passes through, to show how far a copy got.
    #[derive(Default)]
    struct Counter(u64);

    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn open_budget(name: &str) -> Budget<'_> {
        Budget {
            name,
            declared: u64::MAX,
            compressed: u64::MAX,
            max_entry: u64::MAX,
            max_total: u64::MAX,
            max_ratio: u64::MAX,
        }
    }

    /// Far more zeros than any budget in these tests allows.
    const FLOOD: u64 = 64 * MIB as u64;

    /// Copies from a flood of zeros; returns the error, the bytes written and the bytes read.
    fn copy_flood(budget: &Budget<'_>, total: &mut u64) -> (PackageError, u64, u64) {
        let mut source = io::repeat(0).take(FLOOD);
        let mut out = Counter::default();
        let err = copy_bounded(&mut source, &mut out, budget, total).expect_err("must stop");
        let read = FLOOD - source.limit();
        (err, out.0, read)
    }

    #[test]
    fn copying_stops_just_past_each_limit_and_writes_nothing_beyond_it() {
        let chunk = CHUNK as u64;

        let (err, written, read) = copy_flood(
            &Budget {
                max_entry: 300_000,
                ..open_budget("e")
            },
            &mut 0,
        );
        assert!(
            matches!(err, PackageError::TooLarge { limit: 300_000, .. }),
            "{err}"
        );
        assert!(
            written <= 300_000 && read <= 300_000 + chunk,
            "{written} {read}"
        );

        let mut total = 900;
        let (err, written, read) = copy_flood(
            &Budget {
                max_total: 1000,
                ..open_budget("t")
            },
            &mut total,
        );
        assert!(err.to_string().contains("expanded contents"), "{err}");
        assert_eq!((written, read), (0, chunk));

        let (err, written, read) = copy_flood(
            &Budget {
                compressed: 10_000,
                max_ratio: 200,
                ..open_budget("r")
            },
            &mut 0,
        );
        assert!(
            matches!(err, PackageError::SuspiciousRatio { limit: 200, .. }),
            "{err}"
        );
        assert!(
            written <= 2_000_000 && read <= 2_000_000 + chunk,
            "{written} {read}"
        );

        let (err, written, read) = copy_flood(
            &Budget {
                declared: 100_000,
                ..open_budget("d")
            },
            &mut 0,
        );
        assert_eq!(err.kind(), "corrupt_entry");
        assert!(
            written <= 100_000 && read <= 100_000 + chunk,
            "{written} {read}"
        );
    }

    #[test]
    fn the_ratio_check_ignores_the_first_mebibyte() {
        let budget = Budget {
            declared: MIB as u64,
            compressed: 1,
            max_ratio: 1,
            ..open_budget("z")
        };
        let mut out = Counter::default();
        copy_bounded(
            &mut io::repeat(0).take(MIB as u64),
            &mut out,
            &budget,
            &mut 0,
        )
        .expect("1 MiB is exempt");
        assert_eq!(out.0, MIB as u64);
    }

    /// A small valid archive to mutate in property tests.
    fn seed_zip() -> Vec<u8> {
        build(&[
            RawEntry::dir("d/"),
            RawEntry::deflated("d/a.txt", b"alpha alpha alpha alpha alpha"),
            RawEntry::stored("b.bin", &noise(64, 3)),
            RawEntry::deflated("z.bin", &[0u8; 3000]),
        ])
    }

    /// Property tests of what parses untrusted input; `.ci/run` runs them
    /// again with many more cases.
    mod fuzz {
        use super::*;

        proptest! {
            #[test]
            fn accepted_paths_never_escape_the_root(
                parts in proptest::collection::vec(
                    prop_oneof![
                        Just(".."), Just("."), Just(""), Just("a"), Just("bc"), Just("\\"),
                        Just("C:"), Just("c:x"), Just("/"), Just("é"), Just("\0"), Just(" "),
                    ],
                    0..8,
                ),
                separators in proptest::collection::vec(prop_oneof![Just("/"), Just("\\"), Just("")], 8),
                anything in ".{0,40}",
            ) {
                let mut joined = String::new();
                for (part, sep) in parts.iter().zip(&separators) {
                    joined.push_str(part);
                    joined.push_str(sep);
                }
                for name in [joined.as_str(), anything.as_str()] {
                    if let Ok(normal) = check_relative_path(name) {
                        // No part of the original, split either way, climbs up or starts at a root.
                        prop_assert!(!name.split(['/', '\\']).any(|c| c == ".."), "{name:?}");
                        prop_assert!(!name.starts_with(['/', '\\']), "{name:?}");
                        // The result is a plain relative path, and normalising is idempotent.
                        prop_assert!(Path::new(&normal)
                            .components()
                            .all(|c| matches!(c, std::path::Component::Normal(_))));
                        prop_assert!(!normal.contains('\\') && !normal.contains('\0'));
                        prop_assert!(!normal.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
                        prop_assert_eq!(check_relative_path(&normal).ok(), Some(normal.clone()));
                    }
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let fx = Fixture::new(&bytes);
                let _ = inspect(&fx.zip, &defaults());
            }

            #[test]
            fn a_damaged_archive_never_panics_and_never_leaves_a_partial_extraction(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                cut in proptest::option::of(any::<prop::sample::Index>()),
            ) {
                let mut bytes = seed_zip();
                for (at, byte) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                if let Some(cut) = cut {
                    let at = cut.index(bytes.len());
                    bytes.truncate(at);
                }
                let fx = Fixture::new(&bytes);
                let inspected = inspect(&fx.zip, &defaults());
                match extract(&fx.zip, &fx.out, &defaults()) {
                    Ok(entries) => {
                        prop_assert!(inspected.is_ok());
                        for entry in entries.iter().filter(|e| !e.is_dir) {
                            let meta = fs::metadata(fx.out.join(&entry.path));
                            prop_assert_eq!(meta.map(|m| m.len()).ok(), Some(entry.size));
                        }
                    }
                    Err(_) => prop_assert_eq!(fx.extracted(), Vec::<String>::new()),
                }
                let mut siblings: Vec<_> = fs::read_dir(fx.dir.path())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .filter_map(|c| c.ok().map(|c| c.file_name()))
                    .collect();
                siblings.sort();
                prop_assert_eq!(siblings, ["archive.zip", "out"]);
            }
        }
    }
}
