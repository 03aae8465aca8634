-- Passkeys (WebAuthn): user handles and ceremony state (see migrations/postgres).
create table webauthn_users (
    user_id integer primary key references users (user_id) on delete cascade,
    user_handle blob not null unique
) strict;

create table passkey_ceremonies (
    purpose text not null check (purpose in ('register', 'challenge', 'login')),
    bound_to text not null,
    user_id integer references users (user_id) on delete cascade,
    state text not null,
    created_at text not null,
    expires_at text not null,
    primary key (purpose, bound_to)
) strict;

create index passkey_ceremonies_expires_idx on passkey_ceremonies (expires_at);
