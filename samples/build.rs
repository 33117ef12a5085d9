//! Builds every guest crate of the repository (the samples' splitters and
//! processors, and the test fixtures) for `wasm32-wasip2` with one nested
//! cargo invocation, then packages each sample's cloud assembly (and
//! application image, if it has one) as a zip in `OUT_DIR` for `src/lib.rs`
//! to embed.
//!
//! The guests are built in `<target dir>/wasm-guests`, shared by every host
//! profile, with the workspace's `guest` profile. A guest crate may ask for
//! wasm target features (`simd128`, say) in its `Cargo.toml`:
//!
//! ```toml
//! [package.metadata.tessera]
//! target-features = ["simd128"]
//! ```
//!
//! Guests asking for the same features are built together, in
//! `<target dir>/wasm-guests-<features>`.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

/// The sample applications, each in `samples/<name>/` with an
/// `assembly.toml`, a `splitter/` crate `tessera-sample-<name>-splitter`, a
/// `processor/` crate `tessera-sample-<name>-processor` and optionally an
/// `image/` folder.
const SAMPLES: &[&str] = &[
    "montecarlo",
    "noop",
    "kmer",
    "render",
    "imageproc",
    "testshard",
    "exec",
];

/// A WASI command program of a sample, built from a `[[bin]]` of a crate in
/// the sample's folder and placed into the sample's application image.
struct Program {
    sample: &'static str,
    package: &'static str,
    artifact: &'static str,
    image_path: &'static str,
}

const PROGRAMS: &[Program] = &[
    Program {
        sample: "testshard",
        package: "tessera-sample-testshard-programs",
        artifact: "checks.wasm",
        image_path: "bin/checks.wasm",
    },
    Program {
        sample: "exec",
        package: "tessera-sample-exec-programs",
        artifact: "textstat.wasm",
        image_path: "bin/textstat.wasm",
    },
];

/// A test fixture crate in `tests/guests/<dir>`, copied to
/// `OUT_DIR/<dir>.wasm`.
struct Fixture {
    dir: &'static str,
    package: &'static str,
    artifact: &'static str,
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        dir: "hostile-splitter",
        package: "tessera-fixture-hostile-splitter",
        artifact: "tessera_fixture_hostile_splitter.wasm",
    },
    Fixture {
        dir: "hostile-processor",
        package: "tessera-fixture-hostile-processor",
        artifact: "tessera_fixture_hostile_processor.wasm",
    },
    Fixture {
        dir: "greedy-processor",
        package: "tessera-fixture-greedy-processor",
        artifact: "tessera_fixture_greedy_processor.wasm",
    },
    Fixture {
        dir: "echo-command",
        package: "tessera-fixture-echo-command",
        artifact: "echo-command.wasm",
    },
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("samples/ lives in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    check_every_guest_is_listed(&root);
    for path in [
        "splitter-sdk",
        "processor-sdk",
        "framework/wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        rerun_if_changed(&root.join(path));
    }
    for sample in SAMPLES {
        rerun_if_changed(&root.join("samples").join(sample));
    }
    for fixture in FIXTURES {
        rerun_if_changed(&root.join("tests/guests").join(fixture.dir));
    }

    check_target_installed();
    let guests = build_guests(&root, &out_dir);

    for fixture in FIXTURES {
        copy(
            &guests.join(fixture.artifact),
            &out_dir.join(format!("{}.wasm", fixture.dir)),
        );
    }
    for sample in SAMPLES {
        package_sample(
            &root.join("samples").join(sample),
            sample,
            &guests,
            &out_dir,
        );
    }
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Fails the build when a guest crate is added without being listed here,
/// so that no guest is silently left out of the build.
fn check_every_guest_is_listed(root: &Path) {
    let subdirs = |dir: &Path, marker: &str| -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.join(marker).is_file())
            .map(|path| {
                path.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let samples = subdirs(&root.join("samples"), "assembly.toml");
    let listed: BTreeSet<String> = SAMPLES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        samples, listed,
        "samples/*/assembly.toml and SAMPLES in samples/build.rs differ"
    );
    let fixtures = subdirs(&root.join("tests/guests"), "Cargo.toml");
    let listed: BTreeSet<String> = FIXTURES.iter().map(|f| f.dir.to_string()).collect();
    assert_eq!(
        fixtures, listed,
        "tests/guests/* and FIXTURES in samples/build.rs differ"
    );
}

fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if !libdir.is_some_and(|dir| dir.is_dir()) {
        panic!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
}

/// A guest crate: its package, its manifest and the component it builds.
struct Guest {
    package: String,
    manifest: PathBuf,
    artifact: String,
}

/// The component a sample's `splitter` or `processor` crate builds.
fn sample_artifact(sample: &str, role: &str) -> String {
    format!("tessera_sample_{}_{role}.wasm", sample.replace('-', "_"))
}

/// Every guest crate of the repository.
fn guests(root: &Path) -> Vec<Guest> {
    let mut guests = Vec::new();
    for sample in SAMPLES {
        for role in ["splitter", "processor"] {
            guests.push(Guest {
                package: format!("tessera-sample-{sample}-{role}"),
                manifest: root
                    .join("samples")
                    .join(sample)
                    .join(role)
                    .join("Cargo.toml"),
                artifact: sample_artifact(sample, role),
            });
        }
    }
    guests.extend(FIXTURES.iter().map(|f| Guest {
        package: f.package.to_string(),
        manifest: root.join("tests/guests").join(f.dir).join("Cargo.toml"),
        artifact: f.artifact.to_string(),
    }));
    guests.extend(PROGRAMS.iter().map(|p| {
        Guest {
            package: p.package.to_string(),
            manifest: root
                .join("samples")
                .join(p.sample)
                .join("programs/Cargo.toml"),
            artifact: p.artifact.to_string(),
        }
    }));
    guests
}

/// The wasm target features a guest's manifest asks for
/// (`[package.metadata.tessera] target-features`), sorted.
fn target_features(manifest: &Path) -> Vec<String> {
    let text = String::from_utf8(read(manifest))
        .unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", manifest.display()));
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", manifest.display()));
    let features = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("tessera"))
        .and_then(|t| t.get("target-features"));
    let Some(features) = features else {
        return Vec::new();
    };
    let mut list: Vec<String> = features
        .as_array()
        .and_then(|a| a.iter().map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_else(|| {
            panic!(
                "{}: package.metadata.tessera.target-features must be a list of names",
                manifest.display()
            )
        });
    for feature in &list {
        assert!(
            !feature.is_empty()
                && feature
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{}: `{feature}` is not a target feature name",
            manifest.display()
        );
    }
    list.sort();
    list.dedup();
    list
}

/// Builds every guest with `cargo build --profile guest --target
/// wasm32-wasip2 -p … -p …`, one invocation per set of target features, and
/// copies the components to one folder, which it returns.
fn build_guests(root: &Path, out_dir: &Path) -> PathBuf {
    let mut groups: BTreeMap<Vec<String>, Vec<Guest>> = BTreeMap::new();
    for guest in guests(root) {
        groups
            .entry(target_features(&guest.manifest))
            .or_default()
            .push(guest);
    }
    let collected = out_dir.join("guests");
    fs::create_dir_all(&collected)
        .unwrap_or_else(|e| panic!("creating {}: {e}", collected.display()));
    for (features, group) in groups {
        let mut target_dir = workspace_target_dir(out_dir).join("wasm-guests");
        if !features.is_empty() {
            target_dir.set_file_name(format!("wasm-guests-{}", features.join("-")));
        }
        let packages: Vec<&str> = group.iter().map(|g| g.package.as_str()).collect();
        let built = cargo_build(root, &target_dir, &packages, &features);
        for guest in &group {
            copy(
                &built.join(&guest.artifact),
                &collected.join(&guest.artifact),
            );
        }
    }
    collected
}

/// Runs one nested `cargo build` of `packages` for the guest target with
/// `features` enabled; returns the folder that holds the components.
fn cargo_build(root: &Path, target_dir: &Path, packages: &[&str], features: &[String]) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    // The host build's flags and profile settings are not meant for the
    // guests, and under `cargo clippy` the workspace wrapper would lint the
    // guests for the wrong target instead of just compiling them.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    for (var, _) in env::vars_os() {
        if var.to_string_lossy().starts_with("CARGO_PROFILE_") {
            cmd.env_remove(var);
        }
    }
    if !features.is_empty() {
        let list: Vec<String> = features.iter().map(|f| format!("+{f}")).collect();
        cmd.env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("-Ctarget-feature={}", list.join(",")),
        );
    }
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(
        status.success(),
        "building the guest components failed ({status})"
    );
    target_dir.join(TARGET).join(PROFILE)
}

/// The workspace's target folder: the nearest ancestor of `OUT_DIR` holding
/// the `CACHEDIR.TAG` cargo writes there, so that every host profile shares
/// one guest build.
fn workspace_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .to_path_buf()
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Writes `OUT_DIR/<name>-assembly.zip`, and `OUT_DIR/<name>-image.zip` when
/// the sample has an `image/` folder; `OUT_DIR/<name>-image.rs` is the
/// `Option<&[u8]>` expression that embeds the image.
fn package_sample(dir: &Path, name: &str, guests: &Path, out_dir: &Path) {
    let assembly = zip(vec![
        (
            "assembly.toml".to_string(),
            read(&dir.join("assembly.toml")),
        ),
        (
            "splitter.wasm".to_string(),
            read(&guests.join(sample_artifact(name, "splitter"))),
        ),
        (
            "processor.wasm".to_string(),
            read(&guests.join(sample_artifact(name, "processor"))),
        ),
    ]);
    write(&out_dir.join(format!("{name}-assembly.zip")), &assembly);

    let image_dir = dir.join("image");
    let zip_path = out_dir.join(format!("{name}-image.zip"));
    let programs: Vec<&Program> = PROGRAMS.iter().filter(|p| p.sample == name).collect();
    let image_expr = if image_dir.is_dir() || !programs.is_empty() {
        let mut entries = Vec::new();
        if image_dir.is_dir() {
            collect_files(&image_dir, "", &mut entries);
        }
        for program in programs {
            // Folder entries for the program's folders, as `collect_files`
            // makes them.
            for (end, _) in program.image_path.match_indices('/') {
                let folder = &program.image_path[..=end];
                if !entries.iter().any(|(name, _)| name == folder) {
                    entries.push((folder.to_string(), Vec::new()));
                }
            }
            entries.push((
                program.image_path.to_string(),
                read(&guests.join(program.artifact)),
            ));
        }
        write(&zip_path, &zip(entries));
        format!("Some(include_bytes!({:?}))", zip_path.display().to_string())
    } else {
        // An image removed since the last build must not linger.
        let _ = fs::remove_file(&zip_path);
        "None".to_string()
    };
    write(
        &out_dir.join(format!("{name}-image.rs")),
        image_expr.as_bytes(),
    );

    let mut demo_expr = Vec::new();
    let demo_dir = dir.join("demo");
    if demo_dir.is_dir() {
        walk(&demo_dir, "", &mut |name, path| {
            if let Some(file) = path {
                let file = file.display().to_string();
                demo_expr.push(format!("({name:?}, include_bytes!({file:?}) as &[u8])"));
            }
        });
    }
    write(
        &out_dir.join(format!("{name}-demo.rs")),
        format!("&[{}]", demo_expr.join(", ")).as_bytes(),
    );
}

/// Collects the files under `dir` as (zip path, contents); folders get an
/// entry named `<path>/` so that empty ones survive.
fn collect_files(dir: &Path, prefix: &str, entries: &mut Vec<(String, Vec<u8>)>) {
    walk(dir, prefix, &mut |name, path| match path {
        Some(file) => entries.push((name, read(file))),
        None => entries.push((name, Vec::new())),
    });
}

/// Calls `visit` for everything under `dir` in name order, with its path
/// relative to `dir` (after `prefix`): folders as `(name/, None)`, files as
/// `(name, Some(path))`.
fn walk(dir: &Path, prefix: &str, visit: &mut dyn FnMut(String, Option<&Path>)) {
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    children.sort();
    for child in children {
        let name = format!(
            "{prefix}{}",
            child.file_name().expect("a name").to_string_lossy()
        );
        if child.is_dir() {
            let folder = format!("{name}/");
            visit(folder.clone(), None);
            walk(&child, &folder, visit);
        } else {
            visit(name, Some(&child));
        }
    }
}

/// A zip of `entries` that depends on nothing but their names and contents:
/// sorted by name, with a fixed timestamp and fixed permissions.
fn zip(mut entries: Vec<(String, Vec<u8>)>) -> Vec<u8> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default());
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, contents) in entries {
        if name.ends_with('/') {
            writer
                .add_directory(name.as_str(), options.unix_permissions(0o755))
                .expect("zip folder entry");
        } else {
            writer
                .start_file(name.as_str(), options.unix_permissions(0o644))
                .expect("zip file entry");
            writer.write_all(&contents).expect("zip file contents");
        }
    }
    writer.finish().expect("zip archive").into_inner()
}

fn write(path: &Path, contents: &[u8]) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
