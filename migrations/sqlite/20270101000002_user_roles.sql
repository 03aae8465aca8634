-- Roles of users (see migrations/postgres).
create table user_roles (
    user_id integer not null references users (user_id) on delete cascade,
    role text not null,
    granted_at text not null,
    primary key (user_id, role)
) strict;
