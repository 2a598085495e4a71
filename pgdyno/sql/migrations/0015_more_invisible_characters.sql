-- More invisible characters in queue and task names (found by trying names as a hostile
-- enqueue role): the Ogham space mark (U+1680), a space that the regular expressions'
-- [[:space:]] does not match in a database whose ctype is C (the embedded server's, and any
-- other created so), and the tag characters (U+E0000-E007F), which render as nothing. Each let
-- 'reports' plus one of them be stored as a queue name that reads as 'reports' and that no
-- worker of `reports` claims. Same rule names as before
-- (`queue_must_not_contain_control_characters`, `task_must_not_contain_control_characters`);
-- names stored before this migration are left as they are.
CREATE OR REPLACE FUNCTION pgdyno.invisible_characters() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$SELECT '[[:cntrl:]\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000e0000-\U000e007f]'::text$$;
