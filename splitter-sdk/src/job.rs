use crate::Params;

/// A file visible to a guest, named by its path relative to the sandbox
/// folder that holds it (`/inputs` or `/output`); `/` separates folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's path relative to its sandbox folder.
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
}

/// A job, as the splitter and the merge step see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// The application's name.
    pub app: String,
    /// The application version the job runs.
    pub app_version: u32,
    /// Every input file of the job, mounted at `/inputs/<name>`.
    pub inputs: Vec<FileInfo>,
    pub(crate) parameters: Params,
}

impl Job {
    /// Creates a job, e.g. to call a guest in a native unit test.
    pub fn new(
        id: impl Into<String>,
        app: impl Into<String>,
        app_version: u32,
        parameters: Params,
        inputs: Vec<FileInfo>,
    ) -> Self {
        Self {
            id: id.into(),
            app: app.into(),
            app_version,
            inputs,
            parameters,
        }
    }

    /// The job's parameters, checked against the application's declared
    /// parameters, with defaults applied.
    pub fn parameters(&self) -> &Params {
        &self.parameters
    }
}
