-- One-time tokens sent by mail: `verify` (the address of `email` is the user's),
-- `reset` (a new password), `change` (the user's address becomes `email`). Only the
-- SHA-256 of each token is kept, and for a verification its short code as a keyed hash;
-- `attempts` counts wrong codes. A token is used once (`used_at`) and only until
-- `expires_at`. `session_id` is the session that asked for an email change.
create table email_tokens (
    token_hash bytea primary key,
    user_id bigint not null references users (user_id) on delete cascade,
    purpose text not null check (purpose in ('verify', 'reset', 'change')),
    email text not null,
    code_hash text,
    attempts integer not null default 0,
    session_id uuid,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    used_at timestamptz
);

create index email_tokens_user_idx on email_tokens (user_id, purpose);
create index email_tokens_expires_idx on email_tokens (expires_at);
