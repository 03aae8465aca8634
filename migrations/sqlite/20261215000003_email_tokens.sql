-- One-time tokens sent by mail (see migrations/postgres).
create table email_tokens (
    token_hash blob primary key,
    user_id integer not null references users (user_id) on delete cascade,
    purpose text not null check (purpose in ('verify', 'reset', 'change')),
    email text not null,
    code_hash text,
    attempts integer not null default 0,
    session_id blob,
    created_at text not null,
    expires_at text not null,
    used_at text
) strict;

create index email_tokens_user_idx on email_tokens (user_id, purpose);
create index email_tokens_expires_idx on email_tokens (expires_at);
