-- A login challenge is tied to the credentials it proved (review16 L1): the user's
-- credentials_version when it was made; a password change, a reset or a logout everywhere
-- since (each bumps the version) voids it.
alter table login_challenges add column credentials_version bigint not null default 0;
