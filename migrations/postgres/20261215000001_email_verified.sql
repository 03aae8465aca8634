-- When the account's address was proven (a verification link or code, a password reset
-- by mail, or a confirmed email change); null while it is not.
alter table users add column email_verified_at timestamptz;
