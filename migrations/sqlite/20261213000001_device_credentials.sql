-- Which credentials each known device logged in with: a password change or a logout
-- everywhere moves the user's version on, and a device of another version is known no
-- more, even one whose login raced with the change. Devices already known keep the
-- user's current version.
alter table known_devices add column credentials_version integer not null default 0;
update known_devices
   set credentials_version = (select u.credentials_version from users u where u.user_id = known_devices.user_id);
