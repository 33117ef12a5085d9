-- A pool created for one job (the job carried a pool specification): the
-- pool manager removes it, and stops its nodes, once that job has ended.
ALTER TABLE pools ADD COLUMN auto_job TEXT;
