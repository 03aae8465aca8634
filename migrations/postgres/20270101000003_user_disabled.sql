-- When an operator disabled the account (admin API); null while it is enabled. A disabled
-- account cannot start a session (the session insert checks it).
alter table users add column disabled_at timestamptz;
