-- Who charges and who pays (issue 20): users (drivers), their groups, the id tags they own and
-- their prepaid balance, changed only by booked entries. Every change of what the native
-- authorizer needs (a user's status, balance, prepaid flag and groups; a group's balance rule)
-- sends NOTIFY evgate_user in its transaction, so every process decides from memory.
-- Tables have bigint ids so that a sub_operator_id column (tenancy) can be added later.

-- A user group: a name, and whether its prepaid members may charge at or below zero
-- (a member of any group that allows it is never refused for the balance).
CREATE TABLE user_groups (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    allow_empty_balance boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX user_groups_name ON user_groups (lower(name));

-- A user. The email is unique compared case-insensitively. The balance is in the user's
-- currency (ISO 4217), at most 4 decimals (every currency's minor unit fits); it is changed
-- only together with a balance_entries row.
CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    first_name  text CHECK (length(first_name) <= 100),
    last_name   text CHECK (length(last_name) <= 100),
    phone       text CHECK (length(phone) <= 32),
    language    text CHECK (length(language) <= 35),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    prepaid     boolean NOT NULL DEFAULT false,
    currency    text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    balance     numeric(20, 4) NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

-- A group in use cannot be deleted (no cascade): its members would change without an event.
CREATE TABLE user_group_members (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id bigint NOT NULL REFERENCES user_groups (id),
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_group_members_group ON user_group_members (group_id);

-- An id tag may belong to a user; a user who owns id tags cannot be deleted (their cards
-- would silently become the operator's own, accepted ones).
ALTER TABLE id_tags ADD COLUMN user_id bigint REFERENCES users (id);
CREATE INDEX id_tags_user ON id_tags (user_id) WHERE user_id IS NOT NULL;

-- The booked entries of a balance: amount signed (credit > 0, debit < 0), the balance after
-- it. A priced transaction is booked at most once (a resent StopTransaction books nothing).
CREATE TABLE balance_entries (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type           text NOT NULL CHECK (type IN ('topUp', 'voucher', 'adjustment', 'transaction')),
    amount         numeric(20, 4) NOT NULL CHECK (amount <> 0),
    balance        numeric(20, 4),
    currency       text NOT NULL,
    transaction_id integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'transaction') = (transaction_id IS NOT NULL))
);
CREATE INDEX balance_entries_user ON balance_entries (user_id, id);
CREATE UNIQUE INDEX balance_entries_transaction ON balance_entries (transaction_id)
    WHERE transaction_id IS NOT NULL;

-- What the native authorizer of every process holds in memory, sent on each change by these
-- triggers (so that no change, whoever makes it, can forget to notify): a user's status,
-- prepaid flag, balance and groups ({"kind": "user", ...}, or {"deleted": true} once gone) and a
-- group's balance rule ({"kind": "group", ...}).
CREATE FUNCTION user_auth_notify(uid bigint) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('evgate_user', coalesce(
        (SELECT json_build_object(
                    'kind', 'user', 'id', u.id, 'status', u.status, 'prepaid', u.prepaid,
                    'balance', u.balance::text,
                    'groupIds', ARRAY(SELECT m.group_id FROM user_group_members m
                                      WHERE m.user_id = u.id ORDER BY m.group_id))::text
         FROM users u WHERE u.id = uid),
        json_build_object('kind', 'user', 'id', uid, 'deleted', true)::text));
$$;

CREATE FUNCTION user_row_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM user_auth_notify(OLD.id);
    ELSE
        PERFORM user_auth_notify(NEW.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER users_notify AFTER INSERT OR DELETE OR UPDATE OF status, prepaid, balance
    ON users FOR EACH ROW EXECUTE FUNCTION user_row_notify();

CREATE FUNCTION user_member_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM user_auth_notify(OLD.user_id);
    ELSE
        PERFORM user_auth_notify(NEW.user_id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER user_group_members_notify AFTER INSERT OR DELETE
    ON user_group_members FOR EACH ROW EXECUTE FUNCTION user_member_notify();

CREATE FUNCTION user_group_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('evgate_user',
            json_build_object('kind', 'group', 'id', OLD.id, 'deleted', true)::text);
    ELSE
        PERFORM pg_notify('evgate_user', json_build_object(
            'kind', 'group', 'id', NEW.id,
            'allowEmptyBalance', NEW.allow_empty_balance)::text);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER user_groups_notify AFTER INSERT OR DELETE OR UPDATE OF allow_empty_balance
    ON user_groups FOR EACH ROW EXECUTE FUNCTION user_group_notify();

-- A user's payment methods: what the payment provider holds, by reference. evgate never stores
-- a card number (the API refuses any value that looks like one): only its type, issuer, last
-- four digits, expiry and the provider's opaque token. At most one default per user.
CREATE TABLE payment_methods (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type           text NOT NULL CHECK (type IN ('card', 'sepaDirectDebit', 'paypal', 'other')),
    issuer         text CHECK (length(issuer) BETWEEN 1 AND 50),
    last_four      text CHECK (last_four ~ '^[0-9]{4}$'),
    expiry_month   smallint CHECK (expiry_month BETWEEN 1 AND 12),
    expiry_year    smallint CHECK (expiry_year BETWEEN 2000 AND 2199),
    is_default     boolean NOT NULL DEFAULT false,
    provider_token text CHECK (length(provider_token) BETWEEN 1 AND 500),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_methods_user ON payment_methods (user_id, id);
CREATE UNIQUE INDEX payment_methods_default ON payment_methods (user_id) WHERE is_default;

-- Who the invoices of a user are made out to: one row per user.
CREATE TABLE invoice_details (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('individual', 'company')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tax_id      text CHECK (length(tax_id) BETWEEN 1 AND 50),
    street      text CHECK (length(street) <= 200),
    post_code   text CHECK (length(post_code) <= 20),
    city        text CHECK (length(city) <= 100),
    country     text CHECK (country ~ '^[A-Z]{2}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Subscription plans (a fee per renewal period) and users' subscriptions to them: one
-- subscription per user (replaced when they change plan); its status is set through the API
-- and becomes 'expired' once ends_at has passed (the expiry task). ("Subscription" alone is a
-- notification subscription in evgate: these are always user subscriptions.)
CREATE TABLE subscription_plans (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    fee            numeric(20, 4) NOT NULL CHECK (fee >= 0),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    renewal_period text NOT NULL
                   CHECK (renewal_period IN ('weekly', 'monthly', 'quarterly', 'yearly')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX subscription_plans_name ON subscription_plans (lower(name));

CREATE TABLE user_subscriptions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    plan_id     bigint NOT NULL REFERENCES subscription_plans (id),
    status      text NOT NULL
                CHECK (status IN ('pending', 'active', 'suspended', 'canceled', 'expired')),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_subscriptions_plan ON user_subscriptions (plan_id);
CREATE INDEX user_subscriptions_due ON user_subscriptions (ends_at)
    WHERE status IN ('pending', 'active', 'suspended');

-- Partners (corporate customers) and their members: a user belongs to at most one partner,
-- joined by accepting an invite sent to their email. A partner with members is not deleted.
CREATE TABLE partners (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    registration_number text CHECK (length(registration_number) BETWEEN 1 AND 50),
    vat_number          text CHECK (length(vat_number) BETWEEN 1 AND 50),
    external_id         text CHECK (length(external_id) BETWEEN 1 AND 100),
    street              text CHECK (length(street) <= 200),
    post_code           text CHECK (length(post_code) <= 20),
    city                text CHECK (length(city) <= 100),
    country             text CHECK (country ~ '^[A-Z]{2}$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE users ADD COLUMN partner_id bigint REFERENCES partners (id);
CREATE INDEX users_partner ON users (partner_id) WHERE partner_id IS NOT NULL;

-- An email invited to a partner: pending until a user with that email accepts it (accepted,
-- user_id) or expires_at passes (expired, by the expiry task). One pending invite per partner
-- and email.
CREATE TABLE partner_invites (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id  bigint NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'accepted', 'expired')),
    user_id     bigint REFERENCES users (id) ON DELETE SET NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partner_invites_partner ON partner_invites (partner_id, id);
CREATE UNIQUE INDEX partner_invites_pending ON partner_invites (partner_id, lower(email))
    WHERE status = 'pending';
CREATE INDEX partner_invites_due ON partner_invites (expires_at) WHERE status = 'pending';
