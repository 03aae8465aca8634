-- Second factors (issue 16). A factor is active once `activated_at` is set: a TOTP factor
-- after its first correct code. `secret` is the TOTP key, sealed under KEY_ENCRYPTION_KEY
-- when one is configured (the row's name, `factor:<factor_id>`, is the associated data);
-- a passkey keeps its credential there. `last_used_step` is the last TOTP time step
-- accepted: a code of that step or an earlier one is refused (replay).
create table factors (
    factor_id uuid primary key,
    user_id bigint not null references users (user_id) on delete cascade,
    kind text not null check (kind in ('totp', 'passkey')),
    name text not null,
    secret bytea not null,
    credential_id bytea unique,
    created_at timestamptz not null,
    activated_at timestamptz,
    last_used_at timestamptz,
    last_used_step bigint
);

create index factors_user_id_idx on factors (user_id);

-- Recovery codes: ten per user, shown once, kept only as SHA-256 digests (each code holds
-- 80 random bits). A used code keeps its row, with `used_at`, until the next set replaces
-- them all.
create table recovery_codes (
    user_id bigint not null references users (user_id) on delete cascade,
    code_hash bytea not null,
    created_at timestamptz not null,
    used_at timestamptz,
    primary key (user_id, code_hash)
);

-- A login whose password was right, waiting for a second factor: the challenge token's
-- SHA-256 digest, what may answer it (`methods`, space-separated), the `amr` proved so
-- far, and the device the login came from. Single use (`consumed_at`), short-lived, and
-- refused after `attempts` wrong answers. `passkey_state` keeps a WebAuthn ceremony's
-- state between its two calls.
create table login_challenges (
    challenge_hash bytea primary key,
    user_id bigint not null references users (user_id) on delete cascade,
    methods text not null,
    amr text not null,
    device_hash bytea,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    consumed_at timestamptz,
    attempts integer not null default 0,
    passkey_state text
);

create index login_challenges_expires_at_idx on login_challenges (expires_at);

-- What a session proved (RFC 8176 `amr`, space-separated) and when a factor was last
-- proved in it (`auth_time`): refreshed access tokens carry the same.
alter table sessions add column amr text not null default 'pwd';
alter table sessions add column auth_time timestamptz;
