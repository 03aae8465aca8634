-- The audit trail: one row per security event (logins and failures, throttle refusals,
-- password and email changes, session revocations, refresh-token reuse) and per admin
-- action. Who acted (`actor_kind`: user, admin, client, operator or anonymous, and its
-- id), on whose account (`subject_user_id`, kept after the user is deleted: no foreign
-- key), what (`action`), how it went (`outcome`), from where. Never a secret: `detail`
-- holds only ids, reasons and counts. Deleted AUDIT_RETENTION_DAYS after `occurred_at`.
create table audit_events (
    event_id bigint generated always as identity primary key,
    occurred_at timestamptz not null,
    actor_kind text not null,
    actor_id text,
    subject_user_id bigint,
    action text not null,
    outcome text not null,
    client_ip text,
    user_agent text,
    detail text
);

create index audit_events_occurred_at_idx on audit_events (occurred_at);
create index audit_events_subject_idx on audit_events (subject_user_id, event_id);
