-- Mail waiting to be sent, and mail sent lately. A request only adds a row; the sender
-- (a background task of every replica) claims due rows by moving `next_attempt_at` on,
-- sends, and marks them sent, or retries later with a backoff. Bodies are sealed under
-- KEY_ENCRYPTION_KEY when one is configured, and emptied once the mail is sent.
create table outbox (
    id bigint generated always as identity primary key,
    recipient text not null,
    subject text not null,
    text_body text not null,
    html_body text not null,
    created_at timestamptz not null,
    attempts integer not null default 0,
    next_attempt_at timestamptz not null,
    sent_at timestamptz,
    failed_at timestamptz,
    last_error text
);

create index outbox_due_idx on outbox (next_attempt_at) where sent_at is null and failed_at is null;
