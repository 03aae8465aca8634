-- Roles of users, carried in the `roles` claim of their next access token. `admin` opens
-- the admin API.
create table user_roles (
    user_id bigint not null references users (user_id) on delete cascade,
    role text not null,
    granted_at timestamptz not null,
    primary key (user_id, role)
);
