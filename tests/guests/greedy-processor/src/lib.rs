//! A processor for the host's tests whose linear memory is declared at
//! 1 GiB (see `build.rs`), so that instantiating it asks for more than the
//! tests' memory limit before any of its code runs. Were it to run, it
//! would write `/output/ok.txt`.

use tessera_processor_sdk::{Error, Job, Processor, Task, TaskResult, output_path};

struct Greedy;

impl Processor for Greedy {
    fn process(task: Task) -> Result<(), Error> {
        std::fs::write(output_path("ok.txt"), task.name)?;
        Ok(())
    }

    fn merge(_job: Job, _tasks: Vec<TaskResult>) -> Result<(), Error> {
        Ok(())
    }
}

tessera_processor_sdk::export_processor!(Greedy);
