-- The known device (its token's keyed hash) that each session logged in with: a password
-- change or a logout everywhere keeps that device known, and no other, and hands out no
-- new device token (an access token alone must never yield one).
alter table sessions add column device_hash blob;
