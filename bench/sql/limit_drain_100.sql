-- 100 jobs per statement: claim 100 (SKIP LOCKED) in one statement, complete them in another.
WITH picked AS (
    SELECT id FROM limit_jobs WHERE status = 0 AND queue = 'bench'
     ORDER BY run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE limit_jobs AS j SET status = 1 FROM picked WHERE j.id = picked.id RETURNING j.id
)
SELECT array_agg(id) AS ids FROM claimed \gset
DELETE FROM limit_jobs WHERE id = ANY(:ids::bigint[]);
