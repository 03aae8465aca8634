-- Every change to a service client is logged like a revocation: kind 'client', with the
-- client's id, by a trigger in the changing transaction (whoever changes the row). SQLite
-- has no feed between processes, so processes on it do not cache clients; the log keeps
-- the two schemas alike. `at` is RFC 3339 text in UTC, as authd writes it.
alter table revocations add column client_id text;

create trigger service_clients_updated
after update on service_clients
begin
    insert into revocations (kind, client_id, at)
    values ('client', old.client_id, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'));
end;

create trigger service_clients_deleted
after delete on service_clients
begin
    insert into revocations (kind, client_id, at)
    values ('client', old.client_id, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'));
end;
