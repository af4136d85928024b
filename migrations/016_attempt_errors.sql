-- inbound_events.errors: the errors of an event's failed attempts, oldest first, the
-- last inbox_error_history (20) kept, each {"attempt", "at", "error"} (written by
-- internal/processor with last_error, in the same UPDATE: a processed attempt adds
-- nothing). last_error stays the latest, as before; the console's event page lists
-- them all. NULL until an attempt fails. An instant change (nullable, no default).
SET LOCAL lock_timeout = '5s';

ALTER TABLE inbound_events ADD COLUMN errors jsonb;

-- inbox_append_error appends entry to errors, keeping the last keep of them.
CREATE FUNCTION inbox_append_error(errors jsonb, entry jsonb, keep int) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_array_length(x) <= keep THEN x
                ELSE (SELECT jsonb_agg(v ORDER BY i) FROM jsonb_array_elements(x) WITH ORDINALITY AS a(v, i)
                      WHERE i > jsonb_array_length(x) - keep)
           END
    FROM (SELECT coalesce(errors, '[]'::jsonb) || jsonb_build_array(entry) AS x) s
$$;

---- create above / drop below ----

DROP FUNCTION inbox_append_error(jsonb, jsonb, int);
ALTER TABLE inbound_events DROP COLUMN errors;
