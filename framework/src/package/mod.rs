//! Validation of everything service admins publish and users submit.
//!
//! A Tessera **application** is two zips:
//!
//! - the **application image**: any files the application needs (data, WASI programs
//!   compiled from existing applications). It is extracted with [`extract`] and mounted
//!   read-only at `/app` in every task's sandbox.
//! - the **cloud assembly**: `assembly.toml` at the zip root plus the two WebAssembly
//!   components it names, the job splitter and the task processor. [`read_assembly`]
//!   validates it and returns the parsed [`Manifest`] and both component binaries.
//!
//! Both zips come from outside and are treated as hostile. [`inspect`] checks every entry
//! before a byte is extracted: names must be relative paths that stay inside the root (the
//! same rules as [`check_relative_path`], which job input names and task output paths use
//! too), entries must be plain files or folders, unique, unencrypted, and within
//! [`ArchiveLimits`]. Extraction then enforces the size and compression-ratio limits on the
//! bytes actually decompressed, so an archive whose headers lie is stopped as soon as it
//! crosses a limit or its own declared size, and leaves nothing behind.
//!
//! The manifest declares the application's **parameters** ([`ParamDecl`]). At submit time
//! [`resolve_parameters`] checks the parameters a user gave against those declarations and
//! returns the complete, canonically typed parameter object the splitter receives.
//!
//! Every failure is a [`PackageError`]; [`PackageError::kind`] gives the stable code the
//! API returns, and the message says what is wrong and how to fix it.

mod archive;
mod manifest;
mod params;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[doc(hidden)]
#[cfg(any(test, feature = "test-support"))]
pub use archive::testzip;
pub use archive::{
    ArchiveEntry, ArchiveLimits, check_relative_path, extract, inspect, read_file, verify,
};
pub use manifest::{Manifest, ParamDecl, ParamType, parse_manifest};
pub use params::resolve_parameters;

/// The name of the manifest at the root of every cloud assembly.
pub const MANIFEST_NAME: &str = "assembly.toml";

/// The largest `assembly.toml` accepted. A manifest is a few kilobytes; 1 MiB leaves room
/// for long parameter descriptions without letting the manifest become a memory sink.
pub const MAX_MANIFEST_SIZE: u64 = 1024 * 1024;

/// A validated cloud assembly: its manifest and the two component binaries.
#[derive(Clone, PartialEq)]
pub struct Assembly {
    /// The parsed and validated `assembly.toml`.
    pub manifest: Manifest,
    /// The bytes of the job splitter component named by the manifest.
    pub splitter: Vec<u8>,
    /// The bytes of the task processor component named by the manifest.
    pub processor: Vec<u8>,
}

/// Shows the component sizes rather than megabytes of bytes.
impl fmt::Debug for Assembly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assembly")
            .field("manifest", &self.manifest)
            .field("splitter", &format_args!("<{} bytes>", self.splitter.len()))
            .field(
                "processor",
                &format_args!("<{} bytes>", self.processor.len()),
            )
            .finish()
    }
}

/// Reads and validates a cloud assembly zip.
///
/// The whole archive is validated as by [`inspect`]. `assembly.toml` must sit at the zip
/// root (at most [`MAX_MANIFEST_SIZE`] bytes); the splitter and processor files it names must
/// exist and be at most `limits.max_component_size` bytes each. Whether they are WebAssembly
/// components implementing the Tessera worlds is for the runtime to check when it compiles
/// them.
pub fn read_assembly(zip: &Path, limits: &ArchiveLimits) -> Result<Assembly, PackageError> {
    let mut archive = archive::Validated::open(zip, limits)?;
    let text = match archive.read(MANIFEST_NAME, MAX_MANIFEST_SIZE) {
        Err(PackageError::Missing { name, hint }) if hint.is_empty() => {
            return Err(PackageError::Missing {
                hint: manifest_hint(archive.entries()),
                name,
            });
        }
        other => other?,
    };
    let text = String::from_utf8(text).map_err(|e| {
        PackageError::Manifest(format!(
            "{MANIFEST_NAME} is not valid UTF-8 (invalid byte at offset {}); save it as UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let manifest = parse_manifest(&text)?;
    let splitter = read_component(&mut archive, &manifest.splitter, "splitter", limits)?;
    let processor = read_component(&mut archive, &manifest.processor, "processor", limits)?;
    Ok(Assembly {
        manifest,
        splitter,
        processor,
    })
}

/// Suggests where `assembly.toml` went when it is not at the root, which almost always
/// means the folder was zipped instead of its contents.
fn manifest_hint(entries: &[ArchiveEntry]) -> String {
    let nested = entries
        .iter()
        .find(|e| !e.is_dir && e.path.ends_with(&format!("/{MANIFEST_NAME}")));
    match nested {
        Some(e) => format!(
            "; found `{}` instead: zip the folder's contents, not the folder itself",
            e.path
        ),
        None => format!("; a cloud assembly needs `{MANIFEST_NAME}` at the root of the zip"),
    }
}

fn read_component(
    archive: &mut archive::Validated,
    name: &str,
    role: &str,
    limits: &ArchiveLimits,
) -> Result<Vec<u8>, PackageError> {
    match archive.read(name, limits.max_component_size) {
        Err(PackageError::Missing { name, hint }) if hint.is_empty() => {
            Err(PackageError::Missing {
                hint: format!("; {MANIFEST_NAME} names it as the {role}"),
                name,
            })
        }
        other => other,
    }
}

/// Everything that can be wrong with an archive, a manifest or a set of job parameters.
///
/// Messages are written for the person who made the package or the request: they say what
/// is wrong and what to do about it. [`PackageError::kind`] gives a stable code per variant.
#[derive(thiserror::Error, Debug)]
pub enum PackageError {
    /// The file is not a zip archive, or its structure (end record, central directory,
    /// local headers) is unreadable, for example because it was truncated.
    #[error(
        "the file is not a readable zip archive ({0}); upload a complete .zip file (it may be truncated or corrupt)"
    )]
    NotAZip(String),
    /// An entry's data could not be read back as its headers describe.
    #[error("entry `{name}` is corrupt: {detail}; re-create the zip")]
    Corrupt {
        /// The entry's name as stored in the archive.
        name: String,
        /// What was wrong with it.
        detail: String,
    },
    /// An entry name or a path would not be a safe relative path.
    #[error(
        "unsafe path {name:?}: {reason}; use relative paths with `/` separators that stay inside the root"
    )]
    UnsafePath {
        /// The offending name, as given.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A symbolic link entry.
    #[error(
        "entry `{0}` is a symbolic link; links are not allowed in packages, store the file itself"
    )]
    Symlink(String),
    /// An entry that is neither a regular file nor a folder, or that uses a compression
    /// method Tessera cannot read.
    #[error("entry `{name}` is not supported: {reason}")]
    UnsupportedEntry {
        /// The entry's name as stored in the archive.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// An encrypted entry.
    #[error(
        "entry `{0}` is encrypted; packages cannot be password-protected, re-create the zip without encryption"
    )]
    Encrypted(String),
    /// More entries than [`ArchiveLimits::max_entries`].
    #[error(
        "the archive has {count} entries; at most {limit} are allowed (pack many small files into fewer larger ones)"
    )]
    TooManyEntries {
        /// How many entries the archive has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Something exceeds a size limit.
    #[error("{what} is larger than the limit of {limit} bytes; make it smaller")]
    TooLarge {
        /// What is too large, e.g. "entry `data.bin`".
        what: String,
        /// The limit it exceeds, in bytes.
        limit: u64,
    },
    /// An entry expands far more than ordinary data does: the signature of a zip bomb.
    #[error(
        "entry `{name}` expands to more than {limit} times its compressed size, which looks like a zip bomb; store such data uncompressed or generate it at run time"
    )]
    SuspiciousRatio {
        /// The entry's name as stored in the archive.
        name: String,
        /// The largest ratio allowed.
        limit: u64,
    },
    /// Two entries with the same normalised name, or a name used both for a file and for
    /// a folder.
    #[error(
        "the archive holds `{0}` more than once (as two entries, or as both a file and a folder); entry names must be unique"
    )]
    Duplicate(String),
    /// A required entry is not in the archive.
    #[error("the archive has no entry `{name}`{hint}")]
    Missing {
        /// The path that was looked up.
        name: String,
        /// Extra guidance, starting with "; ", or empty.
        hint: String,
    },
    /// The extraction destination is not an existing empty folder.
    #[error("cannot extract into {}: {reason}", path.display())]
    BadDestination {
        /// The destination given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// `assembly.toml` is invalid; the message says where.
    #[error("invalid {MANIFEST_NAME}: {0}")]
    Manifest(String),
    /// A job names a parameter the application does not declare.
    #[error("unknown parameter `{name}`; {}", declared_list(declared))]
    UnknownParameter {
        /// The unknown name.
        name: String,
        /// The names the application declares, sorted.
        declared: Vec<String>,
    },
    /// A job omits a parameter that has no default.
    #[error(
        "parameter `{0}` is required: this application gives it no default, so the job must set it"
    )]
    MissingParameter(String),
    /// A job parameter has the wrong type or is out of range.
    #[error("parameter `{name}` {message}")]
    Parameter {
        /// The parameter's name.
        name: String,
        /// What is wrong with the value, e.g. "must be an int, got \"abc\"".
        message: String,
    },
    /// Reading the archive or writing the extracted files failed.
    #[error("i/o error while handling the package: {0}")]
    Io(#[from] io::Error),
}

fn declared_list(declared: &[String]) -> String {
    if declared.is_empty() {
        "this application declares no parameters".to_owned()
    } else {
        format!("this application declares: {}", declared.join(", "))
    }
}

impl PackageError {
    /// A stable snake_case code for the variant, returned by the API as the error code.
    pub fn kind(&self) -> &'static str {
        match self {
            PackageError::NotAZip(_) => "not_a_zip",
            PackageError::Corrupt { .. } => "corrupt_entry",
            PackageError::UnsafePath { .. } => "unsafe_path",
            PackageError::Symlink(_) => "symlink",
            PackageError::UnsupportedEntry { .. } => "unsupported_entry",
            PackageError::Encrypted(_) => "encrypted_entry",
            PackageError::TooManyEntries { .. } => "too_many_entries",
            PackageError::TooLarge { .. } => "too_large",
            PackageError::SuspiciousRatio { .. } => "suspicious_ratio",
            PackageError::Duplicate(_) => "duplicate_entry",
            PackageError::Missing { .. } => "missing_entry",
            PackageError::BadDestination { .. } => "bad_destination",
            PackageError::Manifest(_) => "invalid_manifest",
            PackageError::UnknownParameter { .. } => "unknown_parameter",
            PackageError::MissingParameter(_) => "missing_parameter",
            PackageError::Parameter { .. } => "invalid_parameter",
            PackageError::Io(_) => "io",
        }
    }

    /// Whether the package was rejected for its size: an entry or the whole archive expands
    /// beyond a limit, or it has too many entries. Callers answer these with "payload too
    /// large" rather than "bad request". A suspicious compression ratio is not counted here:
    /// it is a property of the content, not of its size.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            PackageError::TooLarge { .. } | PackageError::TooManyEntries { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::archive::testzip::{Fixture, RawEntry, build, expect_err};
    use super::*;

    /// The preamble of a component: magic, version 0x0d, layer 1.
    const COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn component(tag: &str) -> Vec<u8> {
        [COMPONENT, tag.as_bytes()].concat()
    }

    fn assembly(manifest: &str, files: &[(&str, Vec<u8>)]) -> Fixture {
        let mut entries = vec![RawEntry::stored(MANIFEST_NAME, manifest.as_bytes())];
        entries.extend(
            files
                .iter()
                .map(|(name, data)| RawEntry::deflated(name, data)),
        );
        Fixture::new(&build(&entries))
    }

    fn standard_files() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("splitter.wasm", component("split")),
            ("processor.wasm", component("process")),
        ]
    }

    const MANIFEST: &str = "[parameters.paths]\ntype = \"int\"\ndefault = 10\n";

    #[test]
    fn a_valid_assembly_is_read() {
        let fx = assembly(MANIFEST, &standard_files());
        let got = read_assembly(&fx.zip, &ArchiveLimits::default()).expect("valid");
        assert_eq!(got.manifest.splitter, "splitter.wasm");
        assert_eq!(got.manifest.parameters["paths"].kind, ParamType::Int);
        assert_eq!(got.splitter, component("split"));
        assert_eq!(got.processor, component("process"));
    }

    #[test]
    fn components_are_found_where_the_manifest_says() {
        let fx = assembly(
            "splitter = \"bin/s.wasm\"\nprocessor = \"bin/p.wasm\"\n",
            &[
                ("bin/s.wasm", component("s")),
                ("bin/p.wasm", component("p")),
                ("README.md", b"hi".to_vec()),
            ],
        );
        let got = read_assembly(&fx.zip, &ArchiveLimits::default()).expect("valid");
        assert_eq!(
            (got.splitter, got.processor),
            (component("s"), component("p"))
        );
    }

    #[test]
    fn a_missing_manifest_is_explained() {
        let fx = Fixture::new(&build(&[RawEntry::stored("splitter.wasm", COMPONENT)]));
        let err = expect_err(
            read_assembly(&fx.zip, &ArchiveLimits::default()),
            "missing_entry",
            "no entry `assembly.toml`; a cloud assembly needs `assembly.toml` at the root",
        );
        assert!(matches!(&err, PackageError::Missing { name, .. } if name == MANIFEST_NAME));

        let nested = Fixture::new(&build(&[RawEntry::stored("app/assembly.toml", b"")]));
        expect_err(
            read_assembly(&nested.zip, &ArchiveLimits::default()),
            "missing_entry",
            "found `app/assembly.toml` instead: zip the folder's contents, not the folder itself",
        );
    }

    #[test]
    fn a_folder_named_like_the_manifest_is_reported_as_a_folder() {
        let fx = Fixture::new(&build(&[RawEntry::dir("assembly.toml/")]));
        expect_err(
            read_assembly(&fx.zip, &ArchiveLimits::default()),
            "missing_entry",
            "no entry `assembly.toml`; it is a folder, not a file",
        );
    }

    #[test]
    fn debug_output_summarises_the_components() {
        let fx = assembly(MANIFEST, &standard_files());
        let got = read_assembly(&fx.zip, &ArchiveLimits::default()).expect("valid");
        let shown = format!("{got:?}");
        assert!(shown.contains("splitter: <13 bytes>"), "{shown}");
        assert!(shown.contains("processor: <15 bytes>"), "{shown}");
    }

    #[test]
    fn a_missing_component_names_its_role() {
        let fx = assembly("", &[("splitter.wasm", component("s"))]);
        let err = expect_err(
            read_assembly(&fx.zip, &ArchiveLimits::default()),
            "missing_entry",
            "no entry `processor.wasm`; assembly.toml names it as the processor",
        );
        assert!(matches!(&err, PackageError::Missing { name, .. } if name == "processor.wasm"));
    }

    #[test]
    fn components_are_bounded_in_size() {
        let limits = ArchiveLimits {
            max_component_size: 12,
            ..ArchiveLimits::default()
        };
        let fx = assembly(
            MANIFEST,
            &[
                ("splitter.wasm", component("12345")),
                ("processor.wasm", component("p")),
            ],
        );
        let err = expect_err(
            read_assembly(&fx.zip, &limits),
            "too_large",
            "entry `splitter.wasm` (13 bytes) is larger than the limit of 12 bytes",
        );
        assert!(matches!(err, PackageError::TooLarge { limit: 12, .. }));
        assert!(err.is_too_large());
        let fits = assembly(
            MANIFEST,
            &[
                ("splitter.wasm", component("1234")),
                ("processor.wasm", component("p")),
            ],
        );
        read_assembly(&fits.zip, &limits).expect("12 bytes fit");
    }

    #[test]
    fn manifest_errors_come_through() {
        let fx = assembly(
            "[parameters.p]\ntype = \"int\"\ndefault = 1.5\n",
            &standard_files(),
        );
        expect_err(
            read_assembly(&fx.zip, &ArchiveLimits::default()),
            "invalid_manifest",
            "parameter `p`: default 1.5 is not an int",
        );

        let fx = assembly("", &standard_files());
        let mut entries = vec![RawEntry::stored(MANIFEST_NAME, b"splitter = \"\xff\"")];
        entries.extend(standard_files().iter().map(|(n, d)| RawEntry::stored(n, d)));
        std::fs::write(&fx.zip, build(&entries)).expect("rewrite");
        expect_err(
            read_assembly(&fx.zip, &ArchiveLimits::default()),
            "invalid_manifest",
            "assembly.toml is not valid UTF-8 (invalid byte at offset 12)",
        );

        let huge = format!("# {}\n", " ".repeat(MAX_MANIFEST_SIZE as usize));
        let fx = assembly(&huge, &standard_files());
        expect_err(
            read_assembly(&fx.zip, &ArchiveLimits::default()),
            "too_large",
            "larger than the limit of 1048576 bytes",
        );
    }

    #[test]
    fn the_whole_archive_is_validated_not_just_the_files_read() {
        let mut files = standard_files();
        files.push(("../escape.txt", b"x".to_vec()));
        let fx = assembly(MANIFEST, &files);
        expect_err(
            read_assembly(&fx.zip, &ArchiveLimits::default()),
            "unsafe_path",
            "`..`",
        );
    }

    #[test]
    fn every_variant_has_its_own_snake_case_code() {
        let s = || "x".to_owned();
        let all = [
            PackageError::NotAZip(s()),
            PackageError::Corrupt {
                name: s(),
                detail: s(),
            },
            PackageError::UnsafePath {
                name: s(),
                reason: s(),
            },
            PackageError::Symlink(s()),
            PackageError::UnsupportedEntry {
                name: s(),
                reason: s(),
            },
            PackageError::Encrypted(s()),
            PackageError::TooManyEntries { count: 2, limit: 1 },
            PackageError::TooLarge {
                what: s(),
                limit: 1,
            },
            PackageError::SuspiciousRatio {
                name: s(),
                limit: 1,
            },
            PackageError::Duplicate(s()),
            PackageError::Missing {
                name: s(),
                hint: String::new(),
            },
            PackageError::BadDestination {
                path: PathBuf::from("x"),
                reason: s(),
            },
            PackageError::Manifest(s()),
            PackageError::UnknownParameter {
                name: s(),
                declared: vec![],
            },
            PackageError::MissingParameter(s()),
            PackageError::Parameter {
                name: s(),
                message: s(),
            },
            PackageError::Io(io::Error::other("x")),
        ];
        let too_large: Vec<&str> = all
            .iter()
            .filter(|e| e.is_too_large())
            .map(PackageError::kind)
            .collect();
        assert_eq!(too_large, ["too_many_entries", "too_large"]);
        let codes: HashSet<&str> = all.iter().map(PackageError::kind).collect();
        assert_eq!(codes.len(), all.len(), "codes must be distinct: {codes:?}");
        for code in codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code} is not snake_case"
            );
        }
    }
}
