-- Foundation: chargers and operator API tokens.
-- Secrets are never stored: only their SHA-256 digests (ARCHITECTURE rule 5).

CREATE TABLE chargers (
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:-]{1,64}$'),
    description         text NOT NULL DEFAULT '',
    secret_digest       bytea NOT NULL CHECK (octet_length(secret_digest) = 32),
    -- The least OCPP security profile the charger may connect with: 1 plain ws + Basic/secret,
    -- 2 TLS + Basic/secret, 3 TLS + client certificate.
    security_profile    smallint NOT NULL DEFAULT 1 CHECK (security_profile BETWEEN 1 AND 3),
    -- Lenient protocol validation for this charger (accept and count schema violations).
    lenient             boolean NOT NULL DEFAULT false,
    -- What BootNotification answers: Accepted, Pending or Rejected, set by the operator.
    registration_status text NOT NULL DEFAULT 'Accepted'
                        CHECK (registration_status IN ('Accepted', 'Pending', 'Rejected')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('admin', 'read')),
    digest       bytea NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    created_at   timestamptz NOT NULL DEFAULT now()
);
