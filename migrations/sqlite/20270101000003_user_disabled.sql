-- When an operator disabled the account (see migrations/postgres).
alter table users add column disabled_at text;
