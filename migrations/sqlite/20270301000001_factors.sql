-- Second factors (see migrations/postgres).
create table factors (
    factor_id blob primary key,
    user_id integer not null references users (user_id) on delete cascade,
    kind text not null check (kind in ('totp', 'passkey')),
    name text not null,
    secret blob not null,
    credential_id blob unique,
    created_at text not null,
    activated_at text,
    last_used_at text,
    last_used_step integer
) strict;

create index factors_user_id_idx on factors (user_id);

create table recovery_codes (
    user_id integer not null references users (user_id) on delete cascade,
    code_hash blob not null,
    created_at text not null,
    used_at text,
    primary key (user_id, code_hash)
) strict;

create table login_challenges (
    challenge_hash blob primary key,
    user_id integer not null references users (user_id) on delete cascade,
    methods text not null,
    amr text not null,
    device_hash blob,
    created_at text not null,
    expires_at text not null,
    consumed_at text,
    attempts integer not null default 0,
    passkey_state text
) strict;

create index login_challenges_expires_at_idx on login_challenges (expires_at);

alter table sessions add column amr text not null default 'pwd';
alter table sessions add column auth_time text;
