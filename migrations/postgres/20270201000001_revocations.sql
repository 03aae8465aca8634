-- Every ended session and every change to a user that may have ended sessions, in the
-- order they were recorded: a replica whose change feed was down (or that just started)
-- reads the ones it may have missed, and services following WatchRevocations resume from
-- `seq`. Only rows younger than an access token's lifetime matter; older ones are pruned.
-- `kind`: 'session' (session_id ended), 'user' (the user's sessions ended, or the user
-- changed), 'user_deleted'. No foreign keys: the row outlives a deleted user.
create table revocations (
    seq bigint generated always as identity primary key,
    kind text not null,
    session_id uuid,
    user_id bigint,
    at timestamptz not null
);

create index revocations_at_idx on revocations (at);

-- Sessions ended lately, so that the first start on this schema knows them already.
insert into revocations (kind, session_id, user_id, at)
select 'session', session_id, user_id, revoked_at
  from sessions
 where revoked_at > now() - interval '1 day'
 order by revoked_at;
