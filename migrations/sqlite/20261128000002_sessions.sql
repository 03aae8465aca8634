-- One row per login. No token is stored: a refresh token is an HMAC over
-- (session_id, generation), and `generation` says which one is current.
create table sessions (
    session_id blob primary key,
    user_id integer not null references users (user_id) on delete cascade,
    generation integer not null default 0,
    created_at text not null,
    last_used_at text not null,
    rotated_at text,
    expires_at text not null,
    revoked_at text,
    user_agent text,
    ip text
) strict;

create index sessions_user_id_idx on sessions (user_id);

-- Keys generated when the configuration names none.
create table secrets (
    name text primary key,
    value blob not null,
    created_at text not null
) strict;
