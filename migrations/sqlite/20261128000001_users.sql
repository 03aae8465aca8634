-- The embedded backend's `users`: the same columns as on PostgreSQL. Timestamps are
-- RFC 3339 text in UTC written by authd (never SQLite's clock), so that they compare in
-- order as text.
create table users (
    user_id integer primary key autoincrement,
    name text not null,
    email text not null,
    location text not null,
    about text,
    password text not null,
    created_at text not null,
    updated_at text not null
) strict;

-- Emails are unique whatever their case (they are ASCII, which SQLite's lower() covers);
-- the database enforces it, so two concurrent registrations cannot both succeed.
create unique index users_email_lower_key on users (lower(email));
