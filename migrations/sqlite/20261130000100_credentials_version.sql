-- Which credentials each session was started with. A password change, a logout
-- everywhere (and a reset) move the user's version on; a session of another version is
-- over, even one whose login raced with the change.
alter table users add column credentials_version integer not null default 0;
alter table sessions add column credentials_version integer not null default 0;
