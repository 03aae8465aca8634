-- One row per login. No token is stored: a refresh token is an HMAC over
-- (session_id, generation), and `generation` says which one is current.
create table sessions (
    session_id uuid primary key,
    user_id bigint not null references users (user_id) on delete cascade,
    generation bigint not null default 0,
    created_at timestamptz not null,
    last_used_at timestamptz not null,
    rotated_at timestamptz,
    expires_at timestamptz not null,
    revoked_at timestamptz,
    user_agent text,
    ip text
);

create index sessions_user_id_idx on sessions (user_id);

-- Keys generated when the configuration names none, shared by every replica.
create table secrets (
    name text primary key,
    value bytea not null,
    created_at timestamptz not null default now()
);
