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
pub fn output_path(name: &str) -> PathBuf {
    [OUTPUT_DIR, name].iter().collect()
}
