-- Service clients (see migrations/postgres).
create table service_clients (
    client_id text primary key,
    name text not null,
    scopes text not null,
    secret_hash blob not null,
    previous_secret_hash blob,
    previous_valid_until text,
    certificate_name text unique,
    created_at text not null,
    rotated_at text
) strict;
