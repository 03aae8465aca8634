-- Passkeys (WebAuthn). A registered passkey is a factor (`factors`, kind 'passkey'); here
-- is what the ceremonies need besides.
--
-- Each user's WebAuthn user handle: a random id, never the account's id or address, that
-- an authenticator keeps with a discoverable passkey and gives back at a passkey login.
create table webauthn_users (
    user_id bigint primary key references users (user_id) on delete cascade,
    user_handle uuid not null unique
);

-- The state between the two halves of a ceremony, deleted as it is read (used once), and
-- refused after `expires_at`. `purpose`: 'register' (a passkey for `user_id`, started in
-- session `bound_to`), 'challenge' (answering the login challenge `bound_to` of
-- `user_id`), 'login' (a passkey alone: no user known yet).
create table passkey_ceremonies (
    ceremony_id uuid primary key,
    purpose text not null check (purpose in ('register', 'challenge', 'login')),
    user_id bigint references users (user_id) on delete cascade,
    bound_to text,
    state text not null,
    created_at timestamptz not null,
    expires_at timestamptz not null
);

create index passkey_ceremonies_expires_idx on passkey_ceremonies (expires_at);
