-- Every ended session and every change to a user that may have ended sessions, in the
-- order they were recorded: a process that just started reads the ones of the last
-- access-token lifetime, and services following WatchRevocations resume from `seq`.
-- `kind`: 'session' (session_id ended), 'user' (the user's sessions ended, or the user
-- changed), 'user_deleted'. No foreign keys: the row outlives a deleted user.
create table revocations (
    seq integer primary key autoincrement,
    kind text not null,
    session_id blob,
    user_id integer,
    at text not null
) strict;

create index revocations_at_idx on revocations (at);

-- Sessions ended lately (RFC 3339 text compares in time order), so that the first start
-- on this schema knows them already.
insert into revocations (kind, session_id, user_id, at)
select 'session', session_id, user_id, revoked_at
  from sessions
 where revoked_at > strftime('%Y-%m-%dT%H:%M:%S', 'now', '-1 day')
 order by revoked_at;
