-- Scale-out: which process holds which charger, and commands routed between processes.
--
-- Each evgate process is an instance with a lease it renews; a charger's owner row is live
-- while its instance's lease is. A process killed without a goodbye loses its chargers when
-- its lease runs out; one that stops cleanly deletes its instance (and so its owner rows).

CREATE TABLE cluster_instances (
    instance      text PRIMARY KEY,          -- node/worker/random, unique per process start
    node_id       text NOT NULL,
    worker_index  integer NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    lease_until   timestamptz NOT NULL
);

CREATE TABLE charger_owners (
    charger_id        text PRIMARY KEY,      -- no FK: a deleted charger's row goes when its
                                             -- connection closes (the owner releases it)
    instance          text NOT NULL REFERENCES cluster_instances ON DELETE CASCADE,
    connected_at      timestamptz NOT NULL,  -- the newer connection wins a race
    remote_address    text NOT NULL,
    security_profile  smallint NOT NULL
);
CREATE INDEX charger_owners_instance ON charger_owners (instance);

-- A command for a charger held by another process. Only ids travel by NOTIFY (whose payload
-- is limited to 8000 bytes); the request and its answer travel in this row.
CREATE TABLE remote_calls (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin       text NOT NULL,              -- the instance waiting for the answer
    target       text NOT NULL,              -- the instance holding the charger
    charger_id   text NOT NULL,
    action       text NOT NULL,
    request      jsonb NOT NULL,
    outcome      jsonb,                      -- {"result": ...} or {"error": ...}
    created_at   timestamptz NOT NULL DEFAULT now()
);
