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
