-- What a node's start task wrote (its last 64 KiB each), kept with the node.
ALTER TABLE nodes ADD COLUMN start_task_stdout TEXT;
ALTER TABLE nodes ADD COLUMN start_task_stderr TEXT;
