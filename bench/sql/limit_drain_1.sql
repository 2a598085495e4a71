-- One job per transaction: claim it (SKIP LOCKED), then complete it (DELETE), two commits.
UPDATE limit_jobs SET status = 1
 WHERE id = (SELECT id FROM limit_jobs WHERE status = 0 AND queue = 'bench'
              ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id \gset
DELETE FROM limit_jobs WHERE id = :id;
