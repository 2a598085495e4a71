-- One job per transaction.
INSERT INTO limit_jobs (queue, task, args) VALUES ('bench', 'noop', '{}');
