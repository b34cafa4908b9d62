-- Foundation: credentials, trading accounts, their operation history, dealers, LP links,
-- and the local ledger's account records.

CREATE TABLE daemon_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE credential (
    credential_id     uuid PRIMARY KEY,
    venue             text NOT NULL,
    credential_type   text NOT NULL,
    nickname          text,
    status            text NOT NULL CHECK (status IN ('CREATED', 'VERIFIED', 'FAILED', 'REVOKED')),
    secret_ciphertext bytea NOT NULL,
    -- external trading account ids the last successful verification found
    identities        jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    verified_at       timestamptz,
    revoked_at        timestamptz
);
CREATE INDEX credential_created_idx ON credential (created_at, credential_id);

CREATE TABLE trading_account (
    trading_account_id          uuid PRIMARY KEY,
    venue                       text NOT NULL,
    kind                        text NOT NULL CHECK (kind IN ('EXCHANGE', 'DEALER', 'CLIENT')),
    external_trading_account_id text NOT NULL,
    account_type                text NOT NULL,
    external_account_type       text NOT NULL,
    nickname                    text,
    status                      text NOT NULL CHECK (status IN
        ('SETUP', 'ACTIVE', 'INACTIVE', 'LOCKED', 'DISCONNECTED', 'SUSPENDED', 'DELETED')),
    created_at                  timestamptz NOT NULL,
    updated_at                  timestamptz NOT NULL,
    CHECK ((kind = 'EXCHANGE') = (venue <> 'FERMATA'))
);
CREATE INDEX trading_account_created_idx ON trading_account (created_at, trading_account_id);
CREATE INDEX trading_account_venue_idx ON trading_account (venue, status);

CREATE TABLE trading_account_credential (
    trading_account_id          uuid NOT NULL REFERENCES trading_account ON DELETE CASCADE,
    credential_id               uuid NOT NULL REFERENCES credential,
    external_trading_account_id text NOT NULL,
    live                        boolean NOT NULL DEFAULT true,
    PRIMARY KEY (trading_account_id, credential_id)
);
-- One live connection per (credential, external account): a second connect is a 409.
CREATE UNIQUE INDEX trading_account_credential_live_uq
    ON trading_account_credential (credential_id, external_trading_account_id) WHERE live;

CREATE TABLE trading_account_operation (
    operation_id       uuid PRIMARY KEY,
    trading_account_id uuid NOT NULL REFERENCES trading_account ON DELETE CASCADE,
    operation_type     text NOT NULL CHECK (operation_type IN ('CONNECT', 'DISCONNECT', 'ENABLE',
        'DISABLE', 'UPDATE', 'CREDENTIAL_REVOKE', 'CREDENTIAL_ROTATE', 'LINK', 'UNLINK')),
    status             text NOT NULL,
    detail             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL
);
CREATE INDEX trading_account_operation_account_idx
    ON trading_account_operation (trading_account_id, created_at);
CREATE INDEX trading_account_operation_created_idx ON trading_account_operation (created_at);

CREATE TABLE dealer (
    dealer_account_id uuid PRIMARY KEY REFERENCES trading_account (trading_account_id),
    status            text NOT NULL CHECK (status IN ('ACTIVE', 'PAUSED')),
    pause_reason      text,
    config            jsonb NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE TABLE dealer_link (
    dealer_account_id  uuid NOT NULL REFERENCES dealer,
    -- an LP account serves one dealer at a time: its balance and its exchange: wallet are its own
    trading_account_id uuid NOT NULL UNIQUE REFERENCES trading_account,
    linked_at          timestamptz NOT NULL,
    PRIMARY KEY (dealer_account_id, trading_account_id)
);

CREATE TABLE ledger_account (
    address    text PRIMARY KEY,
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
