use std::path::PathBuf;

/// Where the application image is mounted, read-only.
pub const APP_DIR: &str = "/app";

/// Where the job's inputs are mounted, read-only.
pub const INPUTS_DIR: &str = "/inputs";

/// The path of the job input `name` (a [`FileInfo::name`](crate::FileInfo::name)):
/// `/inputs/<name>`.
pub fn input_path(name: &str) -> PathBuf {
    [INPUTS_DIR, name].iter().collect()
}
