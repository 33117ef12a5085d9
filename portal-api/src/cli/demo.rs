//! `tessera demo`: a sample job end to end on a throw-away service.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::JobState;

use super::ServiceArgs;
use super::commands::watch;
use super::display;
use crate::client::Client;
use crate::embedded::Embedded;

pub(super) async fn run(
    data_dir: Option<PathBuf>,
    sample: &str,
    args: &ServiceArgs,
) -> anyhow::Result<ExitCode> {
    let sample = tessera_samples::get(sample).with_context(|| {
        let names: Vec<_> = tessera_samples::all().iter().map(|s| s.name).collect();
        format!(
            "there is no sample `{sample}`; the samples are: {}",
            names.join(", ")
        )
    })?;
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("tessera-demo-")
            .tempdir()
            .context("creating a temporary folder")?
            .keep(),
    };
    println!(
        "Starting an embedded Tessera service in {}",
        data_dir.display()
    );
    let embedded = Embedded::start(
        args.config(data_dir.clone()),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .await?;
    let result = match embedded.admin_client() {
        Ok(client) => drive(&client, sample, &data_dir).await,
        Err(e) => Err(e.into()),
    };
    embedded.stop().await?;
    result
}

async fn drive(
    client: &Client,
    sample: &tessera_samples::SampleApp,
    data_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let url = client.url();
    println!("Portal API on {url}");
    println!(
        "Publishing the `{}` sample: {}",
        sample.name, sample.summary
    );
    let version = client
        .publish_bytes(
            sample.name,
            sample.assembly.to_vec(),
            sample.image.map(<[u8]>::to_vec),
        )
        .await?;
    let parameters: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(sample.demo_parameters).context("the sample's demo parameters")?;
    let mut inputs = Vec::new();
    for (name, bytes) in sample.demo_inputs {
        let file = client.upload_bytes(Bytes::from_static(bytes)).await?;
        inputs.push(InputRef {
            name: (*name).to_string(),
            sha256: file.sha256,
        });
    }
    let names: Vec<&str> = sample.demo_inputs.iter().map(|(name, _)| *name).collect();
    println!(
        "Submitting a job to {} version {} with {}{}",
        version.app,
        version.version,
        serde_json::Value::Object(parameters.clone()),
        if names.is_empty() {
            String::new()
        } else {
            format!(" and inputs {}", names.join(", "))
        }
    );
    let job = client
        .submit(&SubmitJob {
            app: version.app.clone(),
            parameters,
            inputs,
            ..SubmitJob::default()
        })
        .await?;
    let job = watch(client, &job.id).await?;
    display::job(&job);
    if job.state != JobState::Completed {
        println!(
            "The job did not complete; see `tessera job tasks {}` against {url}.",
            job.id
        );
        return Ok(ExitCode::FAILURE);
    }
    let dir = data_dir.join("outputs").join(&job.id);
    let files = client.download_outputs(&job.id, &dir).await?;
    let report = dir.join("report.txt");
    if report.exists() {
        println!();
        print!("{}", std::fs::read_to_string(&report)?);
        println!();
    }
    println!(
        "Downloaded {} output files to {}",
        files.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
