//! Shared helpers: a service on an ephemeral port, zips built in the test,
//! and waiting for jobs.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{AppVersion, Job};
use tessera_framework::service::ServiceConfig;
use tessera_portal_api::client::{Client, ClientError};
use tessera_portal_api::embedded::Embedded;

/// A service in a temporary folder, serving on an ephemeral port.
pub struct TestService {
    pub client: Client,
    pub embedded: Option<Embedded>,
    pub dir: tempfile::TempDir,
}

impl TestService {
    /// A service with `slots` embedded slots and settings suited to tests.
    pub async fn start(slots: usize) -> Self {
        Self::start_with(slots, |_| {}).await
    }

    /// Like [`TestService::start`], with the config adjusted by `adjust`.
    pub async fn start_with(slots: usize, adjust: impl FnOnce(&mut ServiceConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path(), slots, adjust);
        let embedded = Embedded::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let client = Client::new(&embedded.url()).unwrap();
        Self {
            client,
            embedded: Some(embedded),
            dir,
        }
    }

    /// Stops the service (gracefully).
    pub async fn stop(&mut self) {
        if let Some(e) = self.embedded.take() {
            e.stop().await.unwrap();
        }
    }

    /// Publishes a bundled sample.
    pub async fn publish_sample(&self, name: &str) -> AppVersion {
        let sample = tessera_samples::get(name).unwrap();
        self.client
            .publish_bytes(
                name,
                sample.assembly.to_vec(),
                sample.image.map(<[u8]>::to_vec),
            )
            .await
            .unwrap()
    }

    /// Publishes the hostile fixtures as application `hostile`, with an
    /// application image holding `image_files`.
    pub async fn publish_hostile(&self, image_files: &[(&str, &[u8])]) -> AppVersion {
        let image = (!image_files.is_empty()).then(|| zip_of(image_files));
        self.client
            .publish_bytes("hostile", hostile_assembly(), image)
            .await
            .unwrap()
    }

    /// Submits a job and waits for it to finish.
    pub async fn run(&self, request: SubmitJob) -> Job {
        let job = self.client.submit(&request).await.unwrap();
        wait(&self.client, &job.id).await
    }
}

/// Settings for tests: short heartbeats and limits that misbehaving guests
/// reach quickly.
pub fn test_config(
    dir: &std::path::Path,
    slots: usize,
    adjust: impl FnOnce(&mut ServiceConfig),
) -> ServiceConfig {
    let mut config = ServiceConfig::new(dir.to_path_buf());
    config.embedded_slots = slots;
    config.heartbeat_interval = Duration::from_millis(200);
    config.runtime.max_instances = 64;
    config.scheduler.task_memory_bytes = 256 << 20;
    config.scheduler.task_log_bytes = 1 << 20;
    config.scheduler.task_output_bytes = 64 << 20;
    adjust(&mut config);
    config
}

/// Waits (up to two minutes) for a job to finish.
pub async fn wait(client: &Client, id: &str) -> Job {
    tokio::time::timeout(
        Duration::from_secs(120),
        client.wait(id, Duration::from_millis(50), |_| {}),
    )
    .await
    .expect("the job did not finish within two minutes")
    .unwrap()
}

/// A zip of the given files.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The cloud assembly of the hostile fixtures.
pub fn hostile_assembly() -> Vec<u8> {
    use tessera_samples::fixtures::*;
    zip_of(&[
        ("assembly.toml", HOSTILE_ASSEMBLY_TOML.as_bytes()),
        ("splitter.wasm", HOSTILE_SPLITTER),
        ("processor.wasm", HOSTILE_PROCESSOR),
    ])
}

/// A job of the hostile app whose plan is `tasks` (JSON array of task
/// objects) with or without a merge.
pub fn plan_job(tasks: serde_json::Value, merge: bool) -> SubmitJob {
    let plan = serde_json::json!({ "tasks": tasks, "merge": merge });
    let mut parameters = serde_json::Map::new();
    parameters.insert("plan".into(), serde_json::Value::String(plan.to_string()));
    SubmitJob {
        app: "hostile".into(),
        parameters,
        max_task_retries: Some(0),
        ..SubmitJob::default()
    }
}

/// Asserts an API error's status, code and a part of its message.
pub fn assert_api_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: u16,
    code: &str,
    message_part: &str,
) {
    match result {
        Err(ClientError::Api {
            status: s,
            code: c,
            message,
        }) => {
            assert_eq!(s, status, "status of {c}: {message}");
            assert_eq!(c, code, "code; message: {message}");
            assert!(
                message.contains(message_part),
                "message {message:?} should contain {message_part:?}"
            );
        }
        other => panic!("expected an API error {status} {code}, got {other:?}"),
    }
}

/// Job parameters from a JSON object literal.
pub fn params(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("parameters must be a JSON object, not {other}"),
    }
}

/// A job of the hostile app with these job parameters (`mode`, `count`,
/// `merge`, ...), no retries.
pub fn hostile_job(parameters: serde_json::Value) -> SubmitJob {
    SubmitJob {
        app: "hostile".into(),
        parameters: params(parameters),
        max_task_retries: Some(0),
        ..SubmitJob::default()
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test
/// after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The content of one output of a job: a task's when `task` is given,
/// else the job's own.
pub async fn output(client: &Client, job: &str, task: Option<&str>, path: &str) -> Vec<u8> {
    let outputs = client.outputs(job).await.unwrap();
    let found = outputs
        .iter()
        .find(|o| o.task.as_deref() == task && o.path == path)
        .unwrap_or_else(|| panic!("no output {task:?}/{path} in {outputs:#?}"));
    client.output_bytes(job, found).await.unwrap().to_vec()
}

/// Like [`output`], as text.
pub async fn output_text(client: &Client, job: &str, task: Option<&str>, path: &str) -> String {
    String::from_utf8(output(client, job, task, path).await).unwrap()
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// One entry of a hand-built zip: every header field is the test's, so it
/// can hold what no well-behaved zip writer makes (`..` names, links,
/// repeated names, sizes that lie).
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub name: String,
    /// The bytes as stored: compressed when `method` is 8.
    pub data: Vec<u8>,
    pub method: u16,
    pub crc: u32,
    /// The declared expanded size.
    pub size: u32,
    pub compressed_size: u32,
    /// The unix mode (type and permissions).
    pub mode: u32,
}

impl RawEntry {
    /// A regular file stored uncompressed, mode 0o644.
    pub fn stored(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            data: data.to_vec(),
            method: 0,
            crc: crc32(data),
            size: data.len().try_into().unwrap(),
            compressed_size: data.len().try_into().unwrap(),
            mode: 0o100_644,
        }
    }

    /// A regular file compressed with deflate.
    pub fn deflated(name: &str, data: &[u8]) -> Self {
        let zip = {
            let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            writer.start_file("x", options).unwrap();
            writer.write_all(data).unwrap();
            writer.finish().unwrap().into_inner()
        };
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        let mut raw = archive.by_index_raw(0).unwrap();
        let mut compressed = Vec::new();
        std::io::Read::read_to_end(&mut raw, &mut compressed).unwrap();
        Self {
            method: 8,
            crc: raw.crc32(),
            compressed_size: compressed.len().try_into().unwrap(),
            data: compressed,
            ..Self::stored(name, data)
        }
    }

    /// A symbolic link to `target`.
    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            mode: 0o120_777,
            ..Self::stored(name, target.as_bytes())
        }
    }
}

/// Lays out local headers and data, the central directory and its end
/// record (made by Unix, names flagged UTF-8).
pub fn raw_zip(entries: &[RawEntry]) -> Vec<u8> {
    const MADE_BY_UNIX: u16 = (3 << 8) | 20;
    const FLAG_UTF8: u16 = 1 << 11;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = u32::try_from(out.len()).unwrap();
        let name_len = u16::try_from(e.name.len()).unwrap();
        let common = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(&20u16.to_le_bytes());
            buf.extend_from_slice(&FLAG_UTF8.to_le_bytes());
            buf.extend_from_slice(&e.method.to_le_bytes());
            buf.extend_from_slice(&0u16.to_le_bytes());
            buf.extend_from_slice(&0x21u16.to_le_bytes());
            buf.extend_from_slice(&e.crc.to_le_bytes());
            buf.extend_from_slice(&e.compressed_size.to_le_bytes());
            buf.extend_from_slice(&e.size.to_le_bytes());
            buf.extend_from_slice(&name_len.to_le_bytes());
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(&e.data);

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&MADE_BY_UNIX.to_le_bytes());
        common(&mut central);
        central.extend_from_slice(&[0; 8]);
        central.extend_from_slice(&(e.mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(e.name.as_bytes());
    }
    let count = u16::try_from(entries.len()).unwrap();
    let cd_offset = u32::try_from(out.len()).unwrap();
    let cd_size = u32::try_from(central.len()).unwrap();
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

/// The CRC-32 (IEEE) that zip headers carry.
pub fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in (0u32..).zip(table.iter_mut()) {
        let mut c = i;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    !data
        .iter()
        .fold(!0u32, |c, &b| table[usize::from((c as u8) ^ b)] ^ (c >> 8))
}

/// The hostile assembly's entries as raw entries, with `replace` swapping
/// the bytes of the named entries and `extra` appended.
pub fn hostile_entries(replace: &[(&str, &[u8])], extra: &[RawEntry]) -> Vec<RawEntry> {
    use tessera_samples::fixtures::*;
    let mut entries: Vec<RawEntry> = [
        ("assembly.toml", HOSTILE_ASSEMBLY_TOML.as_bytes()),
        ("splitter.wasm", HOSTILE_SPLITTER),
        ("processor.wasm", HOSTILE_PROCESSOR),
    ]
    .into_iter()
    .map(|(name, default)| {
        let bytes = replace
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(default, |(_, b)| *b);
        RawEntry::stored(name, bytes)
    })
    .collect();
    entries.extend_from_slice(extra);
    entries
}
