-- 100 jobs per statement (and transaction).
INSERT INTO limit_jobs (queue, task, args) SELECT 'bench', 'noop', '{}' FROM generate_series(1, 100);
