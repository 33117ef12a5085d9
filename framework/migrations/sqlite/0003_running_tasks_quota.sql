-- How many of an account's tasks may run at once (NULL: unlimited).
ALTER TABLE accounts ADD COLUMN max_running_tasks BIGINT;
