-- What the console needs beyond the read model (docs/console.md):
--
-- replays (owned by internal/replay): bulk replays, one row per job an operator
-- confirmed: the filter it replays, its rate cap, its progress, and a lease so that
-- another process resumes it if its runner dies. The filter's personal parts (the
-- contact's forms, a payload text or path) are kept in private only while the job
-- runs, and emptied when it ends.
--
-- queue_minutes (owned by internal/processor): per minute and per process, what the
-- processor finished and how long each event took from receipt to processed, as
-- counts per latency bucket; the overview's charts sum them. Each process adds its own
-- row every few seconds (no contention between processes), and rows older than a day
-- are deleted.
SET LOCAL lock_timeout = '5s';

CREATE TABLE replays (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    filter       jsonb       NOT NULL,
    private      jsonb,
    rate         int         NOT NULL CHECK (rate > 0),
    up_to        bigint      NOT NULL,
    total        bigint      NOT NULL,
    cursor       bigint      NOT NULL DEFAULT 0,
    requeued     bigint      NOT NULL DEFAULT 0,
    last_batch   bigint[]    NOT NULL DEFAULT '{}',
    state        text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'cancelled')),
    requested_by text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    locked_by    text,
    locked_until timestamptz,
    CHECK (state = 'running' OR private IS NULL)
);

CREATE INDEX replays_running ON replays (id) WHERE state = 'running';

CREATE TABLE queue_minutes (
    minute    timestamptz NOT NULL,
    process   text        NOT NULL,
    processed bigint      NOT NULL,
    retried   bigint      NOT NULL,
    dead      bigint      NOT NULL,
    latency   bigint[]    NOT NULL,
    PRIMARY KEY (minute, process)
);

---- create above / drop below ----

DROP TABLE queue_minutes;
DROP TABLE replays;
