//! Tessera's sample applications, ready to publish.
//!
//! Each [`SampleApp`] carries its cloud assembly (a zip of `assembly.toml`,
//! `splitter.wasm` and `processor.wasm`) and, when it has one, its application
//! image, both built by this crate's build script: it compiles every guest
//! crate of the repository for `wasm32-wasip2` (one nested cargo build, in
//! `<target dir>/wasm-guests`) and packages the zips deterministically. The
//! host uses them for `tessera demo`, `tessera bench` and its tests.
//!
//! | sample | what it shows |
//! | --- | --- |
//! | `montecarlo` | financial risk modelling: portfolio VaR and expected shortfall, the same answer whatever the task count |
//! | `noop` | empty tasks, to measure the framework's per-task overhead |
//! | `kmer` | gene sequence analysis: FASTA files cut on record boundaries, k-mers counted per chunk, summed into top-N and a full count table |
//! | `testshard` | software testing: a suite's cases sharded by estimated duration (longest first), run as WASI programs, reported as JUnit XML |
//! | `render` | image rendering and animation: a ray-traced orbit of a scene, one task per frame tile, stitched into PNG frames, an animated PNG and a contact sheet preview |
//! | `imageproc` | image processing and media transcoding: PNG and JPEG inputs resized, filtered (grayscale, blur, edges) and converted per task, merged into `results.zip` and `summary.csv` |
//! | `exec` | wrapping an existing application: a WASI command program from the application image (preview 1 module or component) run once per input file with an argument template; exit codes and outputs merged into `manifest.csv` and `summary.json` |
//!
//! [`fixtures`] holds the raw components the host's tests run to check the
//! sandbox and the failure handling.

/// A sample application, as published by `tessera demo`.
pub struct SampleApp {
    /// The application's name.
    pub name: &'static str,
    /// One line saying what it computes.
    pub summary: &'static str,
    /// The cloud assembly zip.
    pub assembly: &'static [u8],
    /// The application image zip, if the application has one.
    pub image: Option<&'static [u8]>,
    /// The JSON object of parameters `tessera demo` submits.
    pub demo_parameters: &'static str,
    /// The input files `tessera demo` uploads, as (input name, contents):
    /// the files of the sample's `demo/` folder.
    pub demo_inputs: &'static [(&'static str, &'static [u8])],
}

static SAMPLES: [SampleApp; 7] = [
    SampleApp {
        name: "montecarlo",
        summary: "Portfolio value-at-risk and expected shortfall by Monte Carlo simulation",
        assembly: include_bytes!(concat!(env!("OUT_DIR"), "/montecarlo-assembly.zip")),
        image: include!(concat!(env!("OUT_DIR"), "/montecarlo-image.rs")),
        demo_inputs: include!(concat!(env!("OUT_DIR"), "/montecarlo-demo.rs")),
        demo_parameters: r#"{"paths": 200000, "tasks": 8}"#,
    },
    SampleApp {
        name: "noop",
        summary: "Empty tasks that measure the framework's per-task overhead",
        assembly: include_bytes!(concat!(env!("OUT_DIR"), "/noop-assembly.zip")),
        image: include!(concat!(env!("OUT_DIR"), "/noop-image.rs")),
        demo_inputs: include!(concat!(env!("OUT_DIR"), "/noop-demo.rs")),
        demo_parameters: r#"{"tasks": 1000}"#,
    },
    SampleApp {
        name: "kmer",
        summary: "k-mer counts of FASTA files, split on record boundaries: top-N, full table and summary",
        assembly: include_bytes!(concat!(env!("OUT_DIR"), "/kmer-assembly.zip")),
        image: include!(concat!(env!("OUT_DIR"), "/kmer-image.rs")),
        demo_inputs: include!(concat!(env!("OUT_DIR"), "/kmer-demo.rs")),
        demo_parameters: r#"{"k": 21, "top": 20, "chunk_bytes": 65536}"#,
    },
    SampleApp {
        name: "render",
        summary: "A ray-traced animation rendered in tiles: PNG frames, an animated PNG and a contact sheet",
        assembly: include_bytes!(concat!(env!("OUT_DIR"), "/render-assembly.zip")),
        image: include!(concat!(env!("OUT_DIR"), "/render-image.rs")),
        demo_inputs: include!(concat!(env!("OUT_DIR"), "/render-demo.rs")),
        demo_parameters: r#"{"frames": 8, "width": 320, "height": 240, "tile_size": 128, "samples_per_pixel": 2}"#,
    },
    SampleApp {
        name: "imageproc",
        summary: "PNG and JPEG images resized, filtered and converted: a zip of results and a CSV summary",
        assembly: include_bytes!(concat!(env!("OUT_DIR"), "/imageproc-assembly.zip")),
        image: include!(concat!(env!("OUT_DIR"), "/imageproc-image.rs")),
        demo_inputs: include!(concat!(env!("OUT_DIR"), "/imageproc-demo.rs")),
        demo_parameters: r#"{"width": 128, "filter": "edges", "format": "png", "per_task": 2}"#,
    },
    SampleApp {
        name: "testshard",
        summary: "A test suite sharded by estimated duration, its WASI test programs run per shard, JUnit XML report",
        assembly: include_bytes!(concat!(env!("OUT_DIR"), "/testshard-assembly.zip")),
        image: include!(concat!(env!("OUT_DIR"), "/testshard-image.rs")),
        demo_inputs: include!(concat!(env!("OUT_DIR"), "/testshard-demo.rs")),
        demo_parameters: r#"{"shards": 4}"#,
    },
    SampleApp {
        name: "exec",
        summary: "An existing WASI program from the application image run once per input file, with an argument template",
        assembly: include_bytes!(concat!(env!("OUT_DIR"), "/exec-assembly.zip")),
        image: include!(concat!(env!("OUT_DIR"), "/exec-image.rs")),
        demo_inputs: include!(concat!(env!("OUT_DIR"), "/exec-demo.rs")),
        demo_parameters: r#"{"program": "bin/textstat.wasm", "args": "--upper {input} {output}", "stdout_to": "{name}.stat", "per_task": 2}"#,
    },
];

/// Every sample application.
pub fn all() -> &'static [SampleApp] {
    &SAMPLES
}

/// The sample application called `name`.
pub fn get(name: &str) -> Option<&'static SampleApp> {
    SAMPLES.iter().find(|sample| sample.name == name)
}

/// The components of the host's tests (from `tests/guests/`).
#[doc(hidden)]
pub mod fixtures {
    /// A splitter that returns any plan, or misbehaves, on request (job
    /// parameter `mode`).
    pub const HOSTILE_SPLITTER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hostile-splitter.wasm"));

    /// A processor that misbehaves on request (task parameter `behaviour`).
    pub const HOSTILE_PROCESSOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hostile-processor.wasm"));

    /// A processor whose linear memory is declared at 1 GiB.
    pub const GREEDY_PROCESSOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/greedy-processor.wasm"));

    /// A WASI command that echoes its arguments, for `run_program`.
    pub const ECHO_COMMAND: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo-command.wasm"));

    /// The `assembly.toml` declaring the parameters of the hostile fixtures.
    pub const HOSTILE_ASSEMBLY_TOML: &str =
        include_str!("../../tests/guests/hostile-assembly.toml");
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use super::*;

    /// `\0asm` followed by the component-model version and layer.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut file = archive.by_index(i).unwrap();
                let mut contents = Vec::new();
                file.read_to_end(&mut contents).unwrap();
                (file.name().to_string(), contents)
            })
            .collect()
    }

    #[test]
    fn assemblies_hold_a_manifest_and_two_components() {
        for sample in all() {
            let entries = unzip(sample.assembly);
            let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
            assert_eq!(
                names,
                ["assembly.toml", "processor.wasm", "splitter.wasm"],
                "{}",
                sample.name
            );
            let manifest: toml::Table =
                toml::from_str(std::str::from_utf8(&entries[0].1).unwrap()).unwrap();
            assert_eq!(manifest["splitter"].as_str(), Some("splitter.wasm"));
            for (_, wasm) in &entries[1..] {
                assert_eq!(wasm[..8], COMPONENT_HEADER, "{}", sample.name);
            }
            let demo: serde_json::Value = serde_json::from_str(sample.demo_parameters).unwrap();
            for name in demo.as_object().unwrap().keys() {
                assert!(
                    manifest["parameters"].get(name).is_some(),
                    "{}: {name}",
                    sample.name
                );
            }
        }
        assert_eq!(get("noop").map(|s| s.name), Some("noop"));
        assert!(get("nothing").is_none());
    }

    /// The wasm target features a guest crate's manifest asks for.
    fn asked_features(manifest: &std::path::Path) -> Vec<String> {
        let doc: toml::Table = toml::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
        doc["package"]
            .get("metadata")
            .and_then(|m| m.get("tessera"))
            .and_then(|t| t.get("target-features"))
            .and_then(|f| f.as_array())
            .map(|a| a.iter().map(|f| f.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }

    /// Whether a component validates without wasm SIMD.
    fn valid_without_simd(wasm: &[u8]) -> bool {
        let features = wasmparser::WasmFeatures::all()
            - wasmparser::WasmFeatures::SIMD
            - wasmparser::WasmFeatures::RELAXED_SIMD;
        wasmparser::Validator::new_with_features(features)
            .validate_all(wasm)
            .is_ok()
    }

    #[test]
    fn guests_are_built_with_the_target_features_they_ask_for() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut with_simd = 0;
        for sample in all() {
            let entries = unzip(sample.assembly);
            for (file, role) in [
                ("processor.wasm", "processor"),
                ("splitter.wasm", "splitter"),
            ] {
                let wasm = &entries.iter().find(|(name, _)| name == file).unwrap().1;
                let asked = asked_features(&root.join(sample.name).join(role).join("Cargo.toml"));
                let simd = asked.iter().any(|f| f == "simd128");
                with_simd += usize::from(simd);
                assert_eq!(
                    valid_without_simd(wasm),
                    !simd,
                    "{} {role}: asks for {asked:?}",
                    sample.name
                );
            }
        }
        assert!(with_simd > 0, "some sample is built with simd128");
    }

    #[test]
    fn fixtures_are_components() {
        for wasm in [
            fixtures::HOSTILE_SPLITTER,
            fixtures::HOSTILE_PROCESSOR,
            fixtures::ECHO_COMMAND,
        ] {
            assert_eq!(wasm[..8], COMPONENT_HEADER);
        }
        let manifest: toml::Table = toml::from_str(fixtures::HOSTILE_ASSEMBLY_TOML).unwrap();
        assert_eq!(
            manifest["parameters"]["mode"]["default"].as_str(),
            Some("plan")
        );
    }
}
