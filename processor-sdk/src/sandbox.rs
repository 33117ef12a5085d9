use std::path::PathBuf;

/// Where the application image is mounted, read-only.
pub const APP_DIR: &str = "/app";

/// Where the inputs are mounted, read-only: the task's job inputs, and the
/// outputs of the tasks it depends on (or, for the merge step, of every task)
/// under `/inputs/<task>/`.
pub const INPUTS_DIR: &str = "/inputs";

/// The writable folder: whatever is here when `process` or `merge` returns
/// `Ok` is its output.
pub const OUTPUT_DIR: &str = "/output";

/// The path of the input `name` (a [`FileInfo::name`](crate::FileInfo::name)):
/// `/inputs/<name>`.
pub fn input_path(name: &str) -> PathBuf {
    [INPUTS_DIR, name].iter().collect()
}

/// The path of the output `name`: `/output/<name>`.
///
/// The first folder of an output's path gives its kind: `previews/…` is a
/// preview (a portal shows it), `intermediate/…` an intermediate result,
/// anything else an output (see [`preview_path`] and [`intermediate_path`]).
pub fn output_path(name: &str) -> PathBuf {
    [OUTPUT_DIR, name].iter().collect()
}

/// The path of the preview `name`, `/output/previews/<name>`, with its
/// folder created.
pub fn preview_path(name: &str) -> std::io::Result<PathBuf> {
    in_output_folder("previews", name)
}

/// The path of the intermediate result `name`,
/// `/output/intermediate/<name>`, with its folder created.
pub fn intermediate_path(name: &str) -> std::io::Result<PathBuf> {
    in_output_folder("intermediate", name)
}

fn in_output_folder(folder: &str, name: &str) -> std::io::Result<PathBuf> {
    let path: PathBuf = [OUTPUT_DIR, folder, name].iter().collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(path)
}
