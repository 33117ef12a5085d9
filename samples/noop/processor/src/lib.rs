//! The processor of the `noop` sample: every task succeeds at once, so a job
//! measures nothing but the framework's per-task overhead.

use tessera_processor_sdk::{Error, Processor, Task, export_processor};

struct Noop;

impl Processor for Noop {
    fn process(_task: Task) -> Result<(), Error> {
        Ok(())
    }
}

export_processor!(Noop);
