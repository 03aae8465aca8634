-- Devices that have logged in to an account before: past the account's failure ceiling
-- they may still try (see the README's "Abuse and fault resistance"). Only a keyed hash
-- of each device token is kept.
create table known_devices (
    token_hash bytea primary key,
    user_id bigint not null references users (user_id) on delete cascade,
    created_at timestamptz not null,
    last_seen_at timestamptz not null
);

create index known_devices_user_idx on known_devices (user_id, last_seen_at);
