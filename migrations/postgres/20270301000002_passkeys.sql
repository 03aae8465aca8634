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
-- refused after `expires_at`; one per (`purpose`, `bound_to`), a new one replacing it.
-- 'register': a passkey for `user_id`, started in session `bound_to`; 'challenge':
-- answering the login challenge `bound_to` (its hash, hex) of `user_id`; 'login': a
-- passkey alone, no user known yet, `bound_to` the ceremony id the client was given.
create table passkey_ceremonies (
    purpose text not null check (purpose in ('register', 'challenge', 'login')),
    bound_to text not null,
    user_id bigint references users (user_id) on delete cascade,
    state text not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    primary key (purpose, bound_to)
);

create index passkey_ceremonies_expires_idx on passkey_ceremonies (expires_at);
