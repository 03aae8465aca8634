-- The audit trail (see migrations/postgres).
create table audit_events (
    event_id integer primary key autoincrement,
    occurred_at text not null,
    actor_kind text not null,
    actor_id text,
    subject_user_id integer,
    action text not null,
    outcome text not null,
    client_ip text,
    user_agent text,
    detail text
) strict;

create index audit_events_occurred_at_idx on audit_events (occurred_at);
create index audit_events_subject_idx on audit_events (subject_user_id, event_id);
