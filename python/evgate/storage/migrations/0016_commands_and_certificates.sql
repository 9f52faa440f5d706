-- Commands sent in the API's asynchronous form (issue 21.5): one row per charger, whatever
-- process runs it, so that any process of a cluster answers GET /api/v1/commands/{id} and the
-- outcome survives a restart. A bulk command (one request to many chargers) is a
-- bulk_commands row and one commands row per charger. Both are kept until expires_at
-- (24 hours after the request), then deleted by the maintenance task.
CREATE TABLE bulk_commands (
    id            uuid PRIMARY KEY,
    action        text NOT NULL,
    request       jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);

CREATE TABLE commands (
    id            uuid PRIMARY KEY,
    bulk_id       uuid REFERENCES bulk_commands (id) ON DELETE CASCADE,
    -- No foreign key: the record of a command outlives a deleted charger.
    charger_id    text NOT NULL,
    action        text NOT NULL,
    request       jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'completed', 'failed')),
    -- The charger's CALLRESULT payload (completed) or the problem (failed).
    response      jsonb,
    problem       jsonb,
    -- The evgate instance running it (cluster_instances.instance): a pending command whose
    -- runner is gone (killed, its lease reaped) failed as 'interrupted'.
    runner        text NOT NULL,
    created_at    timestamptz NOT NULL,
    completed_at  timestamptz,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX commands_bulk ON commands (bulk_id, charger_id) WHERE bulk_id IS NOT NULL;
CREATE INDEX commands_expires ON commands (expires_at);
CREATE INDEX bulk_commands_expires ON bulk_commands (expires_at);

-- Certificates signed for chargers (SignCertificate → CertificateSigned, issue 21.6). Stored
-- with the SignCertificate answer that promised them; sent once; a charger that was not
-- connected or did not answer gets it after its next accepted BootNotification, unless a
-- newer one was signed for it meanwhile ('superseded'). Once the charger answered
-- (Accepted, Rejected, or a CALLERROR: 'error') it is never sent again.
CREATE TABLE signed_certificates (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id         text NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    certificate_chain  text NOT NULL,
    signed_at          timestamptz NOT NULL,
    state              text NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'accepted', 'rejected', 'error', 'superseded')),
    attempts           integer NOT NULL DEFAULT 0,
    -- While a process sends it: no other sends it until then (a dead sender's claim expires).
    sending_until      timestamptz,
    last_attempt_at    timestamptz,
    -- Why the last attempt was not answered, or the charger's CALLERROR.
    last_error         text,
    answered_at        timestamptz
);
CREATE INDEX signed_certificates_pending ON signed_certificates (charger_id) WHERE state = 'pending';
