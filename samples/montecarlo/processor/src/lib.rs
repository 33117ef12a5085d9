//! The processor of the `montecarlo` sample.
//!
//! `process` simulates the task's range of paths and writes its largest
//! losses (`tail.bin`) and the histogram of all its losses
//! (`histogram.json`). `merge` combines every task's tail and histogram into
//! the job's value-at-risk and expected shortfall (`result.json`,
//! `histogram.csv`, `report.txt`).

use std::fmt::Write as _;
use std::fs;

use tessera_processor_sdk::{
    Error, Job, Level, Params, Processor, Task, TaskResult, export_processor, log, output_path,
    progress,
};
use tessera_sample_montecarlo_model::{
    ASSETS, Histogram, RiskParameters, RiskSummary, Tail, decode_tail, encode_tail, path_loss,
    risk_from_tail,
};

/// A task's largest losses, descending, as little-endian `f64`s.
const TAIL_FILE: &str = "tail.bin";
/// A task's histogram, as JSON.
const HISTOGRAM_FILE: &str = "histogram.json";
/// Paths simulated between two progress reports.
const PROGRESS_EVERY: u64 = 16_384;

struct RiskProcessor;

impl Processor for RiskProcessor {
    fn process(task: Task) -> Result<(), Error> {
        let params = risk_parameters(task.job_parameters())?;
        let start: u64 = task.parameters().get("start")?;
        let count: u64 = task.parameters().get("count")?;
        let end = start
            .checked_add(count)
            .filter(|&end| end <= params.paths)
            .ok_or_else(|| {
                Error::new(format!(
                    "paths {start}..{start}+{count} are not within the job's {} paths",
                    params.paths
                ))
            })?;

        let model = params.model();
        let k = params
            .tail_len()
            .min(usize::try_from(count).unwrap_or(usize::MAX));
        let mut tail = Tail::new(k);
        let mut histogram = Histogram::new(&model);
        let mut index = start;
        while index < end {
            let batch_end = end.min(index + PROGRESS_EVERY);
            for path in index..batch_end {
                let loss = path_loss(&model, path);
                tail.push(loss);
                histogram.add(loss);
            }
            index = batch_end;
            progress((index - start) as f32 / count as f32);
        }

        fs::write(
            output_path(TAIL_FILE),
            encode_tail(&tail.into_sorted_desc()),
        )?;
        fs::write(output_path(HISTOGRAM_FILE), serde_json::to_vec(&histogram)?)?;
        Ok(())
    }

    fn merge(job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        let params = risk_parameters(job.parameters())?;
        let model = params.model();
        let k = params.tail_len();
        let mut tail = Tail::new(k);
        let mut histogram = Histogram::new(&model);
        for (i, task) in tasks.iter().enumerate() {
            tail.extend(decode_tail(&read_output(task, TAIL_FILE)?).map_err(|e| {
                Error::new(format!("{}: {e}", task.output_path(TAIL_FILE).display()))
            })?);
            let partial: Histogram = serde_json::from_slice(&read_output(task, HISTOGRAM_FILE)?)?;
            histogram.merge(&partial)?;
            progress((i + 1) as f32 / tasks.len() as f32);
        }
        if histogram.total() != params.paths {
            return Err(Error::new(format!(
                "the tasks simulated {} paths, the job asked for {}",
                histogram.total(),
                params.paths
            )));
        }
        let tail = tail.into_sorted_desc();
        if tail.len() < k {
            return Err(Error::new(format!(
                "the tasks kept {} tail losses, {k} are needed",
                tail.len()
            )));
        }
        let (var, expected_shortfall) = risk_from_tail(&tail, k);

        let summary = RiskSummary {
            paths: params.paths,
            confidence: params.confidence,
            horizon_days: params.horizon_days,
            seed: params.seed,
            portfolio_value: model.portfolio_value(),
            var,
            expected_shortfall,
            tasks: tasks.len() as u64,
        };
        let mut result = serde_json::to_string_pretty(&summary)?;
        result.push('\n');
        fs::write(output_path("result.json"), result)?;
        fs::write(output_path("histogram.csv"), histogram_csv(&histogram))?;
        fs::write(output_path("report.txt"), report(&summary))?;
        log(
            Level::Info,
            &format!(
                "VaR {} USD, expected shortfall {} USD",
                usd(var),
                usd(expected_shortfall)
            ),
        );
        Ok(())
    }
}

export_processor!(RiskProcessor);

fn risk_parameters(params: &Params) -> Result<RiskParameters, Error> {
    let params: RiskParameters = params.deserialize()?;
    params.validate()?;
    Ok(params)
}

fn read_output(task: &TaskResult, file: &str) -> Result<Vec<u8>, Error> {
    let path = task.output_path(file);
    fs::read(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

fn histogram_csv(histogram: &Histogram) -> String {
    let mut csv = String::from("loss_from,loss_to,count\n");
    for (from, to, count) in histogram.bins() {
        writeln!(csv, "{from},{to},{count}").expect("writing to a String");
    }
    csv
}

fn report(s: &RiskSummary) -> String {
    let percent = |x: f64| format!("{:.2}%", 100.0 * x / s.portfolio_value);
    let tail = format!("{:.2}%", 100.0 * (1.0 - s.confidence));
    format!(
        "Portfolio value-at-risk (Monte Carlo)\n\
         \n\
         Portfolio value      {value} USD in {assets} assets\n\
         Horizon              {horizon} trading days\n\
         Paths                {paths} (seed {seed}, {tasks} tasks)\n\
         Confidence level     {confidence}\n\
         Value-at-risk        {var} USD ({var_percent} of the portfolio)\n\
         Expected shortfall   {es} USD ({es_percent} of the portfolio)\n\
         \n\
         In {tail} of the simulated paths the portfolio loses more than the\n\
         value-at-risk over the horizon; the expected shortfall is the mean loss\n\
         over those worst paths.\n",
        value = usd(s.portfolio_value),
        assets = ASSETS.len(),
        horizon = s.horizon_days,
        paths = s.paths,
        seed = s.seed,
        tasks = s.tasks,
        confidence = s.confidence,
        var = usd(s.var),
        var_percent = percent(s.var),
        es = usd(s.expected_shortfall),
        es_percent = percent(s.expected_shortfall),
    )
}

/// Formats an amount with two decimals and thousands separators.
fn usd(amount: f64) -> String {
    let plain = format!("{:.2}", amount.abs());
    let (units, cents) = plain.split_once('.').expect("two decimals");
    let mut grouped = String::new();
    for (i, digit) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if amount < 0.0 && plain != "0.00" {
        "-"
    } else {
        ""
    };
    format!("{sign}{grouped}.{cents}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_get_thousands_separators() {
        assert_eq!(usd(12_000_000.0), "12,000,000.00");
        assert_eq!(usd(999.994), "999.99");
        assert_eq!(usd(-1234.5), "-1,234.50");
        assert_eq!(usd(0.0), "0.00");
        assert_eq!(usd(-0.001), "0.00");
    }
}
