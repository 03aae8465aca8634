-- Service clients: other services calling authd (ValidateToken, the admin API, the revocation
-- feed) with an identity of their own. The secret is kept only as a SHA-256 hash (it is 256
-- random bits: no dictionary to try); after a rotation the previous one still works until
-- `previous_valid_until`. `scopes` is space-separated. `certificate_name`, when set, is the
-- client certificate identity (mTLS) that authenticates as this client.
create table service_clients (
    client_id text primary key,
    name text not null,
    scopes text not null,
    secret_hash bytea not null,
    previous_secret_hash bytea,
    previous_valid_until timestamptz,
    certificate_name text unique,
    created_at timestamptz not null,
    rotated_at timestamptz
);
