-- Mail waiting to be sent, and mail sent lately (see migrations/postgres).
create table outbox (
    id integer primary key autoincrement,
    recipient text not null,
    subject text not null,
    text_body text not null,
    html_body text not null,
    created_at text not null,
    attempts integer not null default 0,
    next_attempt_at text not null,
    sent_at text,
    failed_at text,
    last_error text
) strict;

create index outbox_due_idx on outbox (next_attempt_at) where sent_at is null and failed_at is null;
