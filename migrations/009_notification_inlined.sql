-- inbox_notification was declared IMMUTABLE, but format() and to_json() are STABLE,
-- and Postgres inlines a SQL function only when its body is no more volatile than the
-- function says. So the insert trigger called it as a function, planning its SELECT
-- afresh on every insert statement. Declared STABLE (what its body is), it is inlined
-- into the trigger's query and planned once per session. Same text, same result.
CREATE OR REPLACE FUNCTION inbox_notification(id bigint, provider text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT format('{"id":%s,"provider":%s}', id, to_json(provider))
$$;

---- create above / drop below ----

CREATE OR REPLACE FUNCTION inbox_notification(id bigint, provider text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('{"id":%s,"provider":%s}', id, to_json(provider))
$$;
