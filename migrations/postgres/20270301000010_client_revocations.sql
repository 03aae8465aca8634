-- Service clients are cached in each process (a client check needs no database round trip),
-- so every change to one is logged and announced like a revocation: kind 'client', with the
-- client's id. Written by a trigger, in the changing transaction itself, whoever changes the
-- row (authd, `authd client ...` in another process, or SQL by hand): the row and the
-- NOTIFY on the change channel (`authd_session_changes`, delivered at commit) come with the
-- change or not at all.
alter table revocations add column client_id text;

create function authd_client_changed() returns trigger
language plpgsql as $$
begin
    insert into revocations (kind, client_id, at) values ('client', old.client_id, clock_timestamp());
    perform pg_notify('authd_session_changes', 'client:' || old.client_id);
    return null;
end
$$;

create trigger service_clients_changed
after update or delete on service_clients
for each row execute function authd_client_changed();
